"""The crf-memm experiment's side-by-side rows: jieba on the same test sentences and the BERT
rows at equal training time (smoke scale, through the real runner), and the quick preset's
claims-vs-noise setup (whole test sets, >= 3 seeds)."""

from __future__ import annotations

import pytest

from kexue.experiments import crf_memm


def _sighan_f1(gold: list[list[str]], pred: list[list[str]]) -> float:
    """Word F1 over character spans, written out here (the oracle of the SIGHAN scorer)."""

    def spans(words: list[str]) -> set[tuple[int, int]]:
        out, pos = set(), 0
        for w in words:
            out.add((pos, pos + len(w)))
            pos += len(w)
        return out

    correct = n_gold = n_pred = 0
    for g, p in zip(gold, pred):
        gs, ps = spans(g), spans(p)
        correct, n_gold, n_pred = correct + len(gs & ps), n_gold + len(gs), n_pred + len(ps)
    prec, rec = correct / n_pred, correct / n_gold
    return 2 * prec * rec / (prec + rec)


@pytest.fixture(scope="module")
def smoke_with_bert(tmp_path_factory):
    from kexue.experiments.runner import reproduce

    mp = pytest.MonkeyPatch()
    mp.setenv("KEXUE_CACHE", str(tmp_path_factory.mktemp("cache")))  # the smoke BERT lands here
    over = {"datasets": "ud-gsd-cws", "heads": "softmax,crf", "bert": "smoke"}
    try:
        yield reproduce("crf-memm", "smoke", tmp_path_factory.mktemp("run"), overrides=over,
                        progress=False)  # fmt: skip
    finally:
        mp.undo()


def test_jieba_rows_match_an_independent_jieba_run(smoke_with_bert):
    jieba = pytest.importorskip("jieba")
    from kexue import data

    gold = [[w for w in s if w] for s in data.load("ud-gsd-cws", "test")[:24]]
    pred = [list(jieba.cut("".join(g))) for g in gold]
    m = smoke_with_bert.metrics
    assert m["f1_jieba_ud_gsd_cws"] == pytest.approx(_sighan_f1(gold, pred), abs=1e-5)
    assert m["f1_jieba_norm_ud_gsd_cws"] == m["f1_jieba_ud_gsd_cws"]  # UD-GSD: one text
    assert any(t.title.startswith("jieba vs ours") for t in smoke_with_bert.tables)


def test_bert_rows_train_for_the_cnn_time_and_are_scored(smoke_with_bert):
    res = smoke_with_bert
    m = res.metrics
    (table,) = [t for t in res.tables if t.title.startswith("BERT vs char-CNN")]
    assert [r[:2] for r in table.rows] == [["ud-gsd-cws", "CRF"], ["ud-gsd-cws", "softmax"]]
    for row, h in zip(table.rows, ("crf", "softmax")):
        bert_s, cnn_s, steps = row[5], row[6], row[7]
        assert steps >= 1 and bert_s >= cnn_s - 0.05  # trained until the CNN's time had passed
        assert 0.0 <= m[f"f1_bert_ud_gsd_cws_{h}"] <= 1.0
        gain = 100 * (m[f"f1_bert_ud_gsd_cws_{h}"] - m[f"f1_ud_gsd_cws_{h}"])
        assert m[f"gain_bert_ud_gsd_cws_{h}"] == pytest.approx(gain, abs=2e-3)
    (cmp,) = [c for c in res.comparison if c.quantity.startswith("BERT vs char-CNN")]
    assert "within noise" in cmp.ours  # one seed: never a ranking
    assert any("tiny BERT kexue.lm pretrains" in n for n in res.notes)


def test_config_checks_the_new_fields():
    for bad, field in (({"bert": "medium"}, "bert"), ({"jieba": "yes"}, "jieba"),
                       ({"bert": "smoke", "heads": ("memm",)}, "bert_heads"),
                       ({"bert_datasets": ("msr-cws",), "datasets": ("pku-cws",)}, "bert_datasets"),
                       ({"bert_lr": 0.0}, "bert_lr")):  # fmt: skip
        with pytest.raises(ValueError, match=f"Config.{field}"):
            crf_memm.Config(**bad)
    crf_memm.Config(heads=("memm",))  # no BERT rows: bert_heads is not checked


def test_quick_preset_reports_whole_test_sets_over_three_seeds():
    q = crf_memm.PRESETS["quick"]
    assert q.max_test == 0 and len(q.seeds) >= 3 and q.jieba and q.bert == "quick"
    assert crf_memm.PRESETS["smoke"].bert == ""  # CI's smoke run pretrains nothing
