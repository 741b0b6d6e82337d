"""Scores of `kexue tag evaluate` against independent oracles: seqeval for entities, a
hand-written SIGHAN scorer for segmentation, hand-counted OOV numbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue.tagging.scoring import entity_scores, segmentation_scores

# only the oracle comparison needs seqeval: the hand-counted SIGHAN / OOV tests below always run
try:
    from seqeval import metrics as seqeval_metrics
    from seqeval import scheme as seqeval_scheme
except ImportError:  # pragma: no cover - seqeval is in the [peers] extra
    seqeval_metrics = seqeval_scheme = None

needs_seqeval = pytest.mark.skipif(seqeval_metrics is None, reason="seqeval not installed")

LABELS = ("PER", "LOC", "ORG")


def _tags(scheme: str):
    prefixes = ["B", "I"] + (["E", "S"] if scheme == "BIOES" else [])
    tag = st.one_of(
        st.just("O"),
        st.builds(
            lambda p, lab: f"{p}-{lab}", st.sampled_from(prefixes), st.sampled_from(LABELS)
        ),  # fmt: skip
    )
    return st.lists(st.lists(tag, min_size=1, max_size=8), min_size=1, max_size=6)


@needs_seqeval
@pytest.mark.filterwarnings("ignore")  # seqeval's own warnings on empty classes
@settings(max_examples=60, deadline=None)
@given(data=st.data(), scheme=st.sampled_from(["BIO", "BIOES"]))
def test_entity_scores_match_seqeval_strict(data, scheme):
    gold = data.draw(_tags(scheme))
    pred = [data.draw(st.lists(st.sampled_from(sum(gold, [])), min_size=len(g), max_size=len(g)))
            for g in gold]  # fmt: skip
    toks = [[f"w{i}" for i in range(len(g))] for g in gold]
    ours = entity_scores(toks, gold, pred, scheme)
    mode = seqeval_scheme.IOB2 if scheme == "BIO" else seqeval_scheme.IOBES
    kw = dict(mode="strict", scheme=mode, zero_division=0)
    rep = seqeval_metrics.classification_report(gold, pred, output_dict=True, **kw)
    if ours["n_gold"] or ours["n_pred"]:
        assert ours["f1"] == pytest.approx(rep["micro avg"]["f1-score"], abs=1e-9)
        assert ours["precision"] == pytest.approx(rep["micro avg"]["precision"], abs=1e-9)
        assert ours["recall"] == pytest.approx(rep["micro avg"]["recall"], abs=1e-9)
    for lab, v in ours["per_label"].items():
        if lab in rep and rep[lab]["support"]:
            assert v["f1"] == pytest.approx(rep[lab]["f1-score"], abs=1e-9), lab


def _sighan(gold_line: str, pred_line: str, dictionary: set[str]) -> tuple[int, int, int, int, int]:
    """The SIGHAN ``score`` logic by hand: word boundaries as character offsets."""

    def spans(line):
        out, pos = [], 0
        for w in line.split():
            out.append((pos, pos + len(w), w))
            pos += len(w)
        return out

    g, p = spans(gold_line), {(s, e) for s, e, _ in spans(pred_line)}
    correct = sum((s, e) in p for s, e, _ in g)
    oov = [(s, e) for s, e, w in g if w not in dictionary]
    return correct, len(p), len(g), len(oov), sum(x in p for x in oov)


def test_segmentation_scores_match_a_hand_written_sighan_scorer():
    dictionary = {"我", "爱", "北京", "天安门", "很", "大"}
    pairs = [("我 爱 北京 天安门", "我 爱 北 京 天安门"), ("北京 很 大 的 城市", "北京 很大 的 城市"),
             ("上海 很 大", "上海 很 大")]  # fmt: skip
    gold = [g.split() for g, _ in pairs]
    pred = [p.split() for _, p in pairs]
    sc = segmentation_scores(gold, pred, dictionary)
    c = n_pred = n_gold = n_oov = oov_hit = 0
    for g, p in pairs:
        a, b, d, e, f = _sighan(g, p, dictionary)
        c, n_pred, n_gold, n_oov, oov_hit = c + a, n_pred + b, n_gold + d, n_oov + e, oov_hit + f
    p, r = c / n_pred, c / n_gold
    assert sc["precision"] == pytest.approx(p) and sc["recall"] == pytest.approx(r)
    assert sc["f1"] == pytest.approx(2 * p * r / (p + r))
    # hand count: OOV gold words are 的, 城市, 上海 (3 of 12); 的, 城市 (sentence 2) and 上海 found
    assert (n_oov, oov_hit, n_gold) == (3, 3, 12)
    assert sc["oov_rate"] == pytest.approx(3 / 12) and sc["oov_recall"] == 1.0
    # IV: 9 gold words in the dictionary; missed 北京 (s1), 很 and 大 (s2) -> 6 of 9
    assert sc["iv_recall"] == pytest.approx(6 / 9)


def test_entity_oov_and_unseen_views_hand_counted():
    toks = [["John", "lives", "in", "Paris"], ["Zorg", "met", "John"]]
    gold = [["B-PER", "O", "O", "B-LOC"], ["B-PER", "O", "B-PER"]]
    pred = [["B-PER", "O", "O", "O"], ["B-PER", "O", "B-LOC"]]
    vocab = {"John", "lives", "in", "met"}
    seen = {("PER", "John")}
    sc = entity_scores(toks, gold, pred, "BIO", vocab, seen, sep=" ")
    # OOV tokens: Paris, Zorg (2 of 7); entity tokens 4, of which Paris, Zorg are OOV
    assert sc["oov_token_rate"] == pytest.approx(2 / 7)
    assert sc["oov_entity_token_rate"] == pytest.approx(2 / 4)
    # OOV gold entities: Paris(LOC), Zorg(PER); predicted OOV: Zorg(PER) -> correct 1
    assert sc["oov"]["n_gold"] == 2 and sc["oov"]["precision"] == 1.0
    assert sc["oov"]["recall"] == 0.5
    # unseen gold: Paris, Zorg (John is seen); predicted unseen: Zorg(PER), John(LOC)
    assert sc["unseen"]["n_gold"] == 2 and sc["unseen"]["n_pred"] == 2
    assert sc["unseen"]["f1"] == pytest.approx(0.5)


def test_the_hand_counted_tests_run_without_seqeval(tmp_path):
    """With seqeval unimportable, this file still runs its hand-counted SIGHAN / OOV tests
    (a module-level importorskip once skipped them all)."""
    import subprocess
    import sys
    from pathlib import Path

    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(
        "import sys\nsys.modules['seqeval'] = None\n"  # makes `import seqeval` raise
    )
    env = {**__import__("os").environ, "PYTHONPATH": f"{hide}:{Path.cwd()}"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
         "-k", "sighan or hand_counted and not without_seqeval"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert "2 passed" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
