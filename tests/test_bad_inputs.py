"""One table of bad inputs across the public APIs and the CLI: each gets a clear ValueError or
TypeError naming the argument (API), or one stderr line and exit code 2 (CLI), never a traceback
or an internal error. Parts add their own detailed cases in their test folders; this table is the
cross-cutting floor (issue: at least 60 bad inputs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def _q(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


def _cases():
    from kexue import data
    from kexue.attention import CharLM, MultiHeadSelfAttention, local_attention, pattern_mask
    from kexue.attention.lm import ngram_bpc
    from kexue.core.checks import check_positive_int
    from kexue.core.timing import time_calls
    from kexue.experiments import get
    from kexue.experiments.runner import parse_overrides, resolve_config
    from kexue.init import angle_variance, init_module_, orthogonal_, sample_angles
    from kexue.optim import Lazy, Lookahead
    from kexue.report import Comparison, Plot, Result, Table, mean_std
    from kexue.train import TrainConfig

    lin = nn.Linear(3, 3)
    adam = torch.optim.Adam(lin.parameters())
    ig = get("init-geometry").load()
    sa = get("sparse-attention").load()
    op = get("optimizers").load()
    q = _q(1, 2, 8, 4)
    return [
        # data
        ("data.load unknown name", lambda: data.load("no-such"), ValueError, "unknown dataset"),
        ("data.load unknown split", lambda: data.load("mnist", "dev"), ValueError, "unknown split"),
        (
            "data.load missing split",
            lambda: data.load("cmrc2018", "train"),
            FileNotFoundError,
            "KEXUE_DATA",
        ),
        (
            "list_datasets unknown",
            lambda: data.list_datasets(names=["x"]),
            ValueError,
            "unknown dataset",
        ),
        # report types
        ("metric key with slash", lambda: Result("h").metric("a/b", 1), ValueError, "identifier"),
        ("metric value list", lambda: Result("h").metric("a", [1]), TypeError, "number"),
        ("table ragged row", lambda: Table("T", ["a", "b"], [[1]]), ValueError, "expected 2"),
        ("table dict cell", lambda: Table("T", ["a"], [[{}]]), TypeError, "cell"),
        (
            "comparison verdict",
            lambda: Comparison("q", "a", "o", verdict="maybe"),
            ValueError,
            "verdict",
        ),
        ("comparison non-str", lambda: Comparison("q", 1.0, "o"), TypeError, "article"),
        ("plot path escape", lambda: Plot("../x.png"), ValueError, "plain file name"),
        ("empty note", lambda: Result("h").note(""), ValueError, "non-empty"),
        ("from_json not a dict", lambda: Result.from_json([1]), ValueError, "JSON object"),
        (
            "from_json missing",
            lambda: Result.from_json({"headline": "h"}),
            ValueError,
            "missing key",
        ),
        ("mean_std empty", lambda: mean_std([]), ValueError, "at least one"),
        # experiment configs and overrides
        ("override without =", lambda: parse_overrides(["steps"]), ValueError, "key=value"),
        ("override empty key", lambda: parse_overrides(["=3"]), ValueError, "key=value"),
        ("unknown scale", lambda: resolve_config(ig, "huge"), ValueError, "scale"),
        (
            "unknown key",
            lambda: resolve_config(ig, "smoke", {"nope": "1"}),
            ValueError,
            "unknown config key",
        ),
        (
            "int field not int",
            lambda: resolve_config(ig, "smoke", {"depth": "x"}),
            ValueError,
            "expected int",
        ),
        (
            "init depth -3",
            lambda: resolve_config(ig, "smoke", {"depth": "-3"}),
            ValueError,
            "depth",
        ),
        (
            "init widths 0",
            lambda: resolve_config(ig, "smoke", {"widths": "0"}),
            ValueError,
            "widths",
        ),
        ("init nets 0", lambda: resolve_config(ig, "smoke", {"nets": "0"}), ValueError, "nets"),
        (
            "init table_dims 2",
            lambda: resolve_config(ig, "smoke", {"table_dims": "2"}),
            ValueError,
            "table_dims",
        ),
        (
            "sparse window 0",
            lambda: resolve_config(sa, "smoke", {"window": "0"}),
            ValueError,
            "window",
        ),
        ("sparse rate 1", lambda: resolve_config(sa, "smoke", {"rate": "1"}), ValueError, "rate"),
        ("sparse lr 0", lambda: resolve_config(sa, "smoke", {"lr": "0"}), ValueError, "lr"),
        (
            "sparse dropout 1",
            lambda: resolve_config(sa, "smoke", {"dropout": "1"}),
            ValueError,
            "dropout",
        ),
        (
            "sparse patterns",
            lambda: resolve_config(sa, "smoke", {"patterns": "dense"}),
            ValueError,
            "patterns",
        ),
        (
            "sparse bench_memory",
            lambda: resolve_config(sa, "smoke", {"bench_memory": "maybe"}),
            ValueError,
            "bench_memory",
        ),
        (
            "optim seeds empty",
            lambda: resolve_config(op, "smoke", {"seeds": ""}),
            ValueError,
            "seeds",
        ),
        ("optim alpha 0", lambda: resolve_config(op, "smoke", {"alpha": "0"}), ValueError, "alpha"),
        (
            "optim text_lr -1",
            lambda: resolve_config(op, "smoke", {"text_lr": "-1"}),
            ValueError,
            "text_lr",
        ),
        (
            "optim momentum 1.5",
            lambda: resolve_config(op, "smoke", {"sgd_momentum": "1.5"}),
            ValueError,
            "sgd_momentum",
        ),
        (
            "optim text_batch 0",
            lambda: resolve_config(op, "smoke", {"text_batch": "0"}),
            ValueError,
            "text_batch",
        ),
        ("unknown experiment", lambda: get("nope"), ValueError, "unknown experiment"),
        # core helpers
        ("positive int bool", lambda: check_positive_int(True, "n"), TypeError, "n must be an int"),
        ("positive int 0", lambda: check_positive_int(0, "n"), ValueError, "n must be >= 1"),
        (
            "time_calls repeats 0",
            lambda: time_calls(lambda: None, repeats=0),
            ValueError,
            "repeats",
        ),
        # init
        ("angle_variance n=1", lambda: angle_variance(1), ValueError, "n"),
        ("angle_variance method", lambda: angle_variance(10, "magic"), ValueError, "method"),
        ("sample_angles size 0", lambda: sample_angles(10, 0), ValueError, "size"),
        ("init_module_ scheme", lambda: init_module_(lin, "magic"), ValueError, "scheme"),
        ("orthogonal_ 1-d", lambda: orthogonal_(torch.empty(3)), ValueError, "2"),
        # attention
        ("pattern kind", lambda: pattern_mask("diagonal", 4), ValueError, "kind"),
        ("pattern rate missing", lambda: pattern_mask("atrous", 4), ValueError, "rate"),
        ("local window -1", lambda: local_attention(q, q, q, -1), ValueError, "window"),
        ("local 3-d q", lambda: local_attention(q[0], q[0], q[0], 2), ValueError, "q"),
        ("local k shape", lambda: local_attention(q, _q(1, 2, 7, 4), q, 2), ValueError, "k"),
        ("mhsa heads", lambda: MultiHeadSelfAttention(10, 3), ValueError, "heads"),
        (
            "charlm dim 0",
            lambda: CharLM(vocab_size=5, max_len=4, dim=0, num_heads=1, num_layers=1),
            ValueError,
            "dim",
        ),
        (
            "charlm too long",
            lambda: CharLM(vocab_size=5, max_len=4, dim=8, num_heads=2, num_layers=1)(
                torch.zeros(1, 5, dtype=torch.long)
            ),
            ValueError,
            "max_len",
        ),
        (
            "charlm float ids",
            lambda: CharLM(vocab_size=5, max_len=4, dim=8, num_heads=2, num_layers=1)(
                torch.zeros(1, 3)
            ),
            ValueError,
            "long",
        ),
        (
            "ngram order 3",
            lambda: ngram_bpc(
                torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), 2, 3
            ),
            ValueError,
            "order",
        ),
        # optim
        ("lookahead k 0", lambda: Lookahead(adam, k=0), ValueError, "k"),
        ("lookahead alpha 2", lambda: Lookahead(adam, alpha=2.0), ValueError, "alpha"),
        ("lookahead alpha str", lambda: Lookahead(adam, alpha="0.5"), TypeError, "alpha"),
        (
            "lookahead pullback",
            lambda: Lookahead(adam, pullback="sideways"),
            ValueError,
            "pullback",
        ),
        (
            "lazy moments",
            lambda: Lazy(adam, params=[lin.weight], moments="melt"),
            ValueError,
            "moments",
        ),
        # training config
        ("train no length", lambda: TrainConfig(), ValueError, "max_steps or epochs"),
        ("train steps 0", lambda: TrainConfig(max_steps=0), ValueError, "max_steps"),
        ("train batch 0", lambda: TrainConfig(max_steps=1, batch_size=0), ValueError, "batch_size"),
        (
            "train log_every 0",
            lambda: TrainConfig(max_steps=1, log_every=0),
            ValueError,
            "log_every",
        ),
        ("train epochs float", lambda: TrainConfig(epochs=1.5), ValueError, "epochs"),
    ]


CASES = _cases()


def test_the_table_is_large_enough():
    assert len(CASES) + len(CLI) >= 60


@pytest.mark.parametrize("name, fn, exc, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_api_input_raises_clearly(name, fn, exc, needle):
    with pytest.raises(exc, match=needle) as info:
        fn()
    msg = str(info.value)
    assert msg and "\n" not in msg.strip() and len(msg) < 600, msg


CLI = [
    (["reproduce", "nope"], "unknown experiment"),
    (["reproduce", "init-geometry", "--scale", "huge"], "invalid choice"),
    (["reproduce", "init-geometry", "depth"], "key=value"),
    (["reproduce", "init-geometry", "depth=-3"], "depth must be"),
    (["reproduce", "sparse-attention", "window=0"], "window must be"),
    (["report", "--only", "nope"], "unknown experiment"),
    (["data", "lst"], "invalid choice"),
    (["readme", "--results", "/no/such"], "does not exist"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("argv, needle", CLI, ids=[" ".join(a) for a, _ in CLI])
def test_bad_cli_input_is_one_line_exit_2(argv, needle, capsys, tmp_path):
    from kexue.cli import main

    if argv[0] in ("reproduce", "report"):
        argv = [argv[0], "--out", str(tmp_path / "out"), *argv[1:]]
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2, err
    assert len(err) == 1 and needle in err[0], err
