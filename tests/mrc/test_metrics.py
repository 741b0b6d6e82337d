"""CMRC 2018 and Sogou metrics on handmade cases (values computed by hand)."""

from __future__ import annotations

import math

import pytest

from kexue.mrc.metrics import (
    cmrc_em,
    cmrc_f1,
    evaluate_predictions,
    mixed_segmentation,
    sogou_accuracy,
    sogou_f1,
    sogou_normalize,
)


def test_mixed_segmentation():
    assert mixed_segmentation("韩国Nexon开发，2018年") == [
        "韩",
        "国",
        "nexon",
        "开",
        "发",
        "，",
        "2018",
        "年",
    ]
    assert mixed_segmentation("《星空》", rm_punc=True) == ["星", "空"]


def test_cmrc_f1_uses_longest_common_run():
    # pred 北京天安门 (5 segs), ref 天安门广场 (5): common run 天安门 = 3 -> P = R = 0.6
    assert math.isclose(cmrc_f1("北京天安门", ["天安门广场"]), 0.6)
    # not a bag: 门安天 shares no run longer than 1 with 天安门 -> P = R = 1/3
    assert math.isclose(cmrc_f1("门安天", ["天安门"]), 1 / 3)
    assert cmrc_f1("上海", ["北京", "上海市"]) == pytest.approx(2 * 1 * (2 / 3) / (1 + 2 / 3))
    assert cmrc_f1("", ["北京"]) == 0.0


def test_cmrc_em_ignores_punctuation_only():
    assert cmrc_em("《星辰变》", ["星辰变"]) == 1.0
    assert cmrc_em("星辰", ["星辰变"]) == 0.0
    assert cmrc_em("ABC", ["abc"]) == 1.0


def test_sogou_metrics():
    assert sogou_normalize("ＡＢＣ，１２３　北京！") == "abc123北京"
    assert sogou_accuracy("ＡＢＣ！", ["abc"]) == 1.0
    assert sogou_accuracy("", [""]) == 0.0  # empty predictions score 0
    assert sogou_accuracy("李白 杜甫", ["杜甫 李白"]) == 1.0  # same set of parts
    # bag F1: 门安天 vs 天安门 is a perfect character bag (unlike CMRC's run-based F1)
    assert sogou_f1("门安天", ["天安门"]) == 1.0
    assert math.isclose(sogou_f1("北京天安门", ["天安门广场"]), 0.6)


def test_evaluate_predictions_means_and_final():
    res = evaluate_predictions(["北京", "", "门安天"], [["北京"], ["上海"], ["天安门"]])
    assert res["em"] == pytest.approx(1 / 3) and res["accuracy"] == pytest.approx(1 / 3)
    assert res["f1"] == pytest.approx((1 + 0 + 1 / 3) / 3)
    assert res["sogou_f1"] == pytest.approx(2 / 3)
    assert res["final"] == pytest.approx((1 / 3 + 2 / 3) / 2)
    assert res["empty"] == pytest.approx(1 / 3)


def test_metric_errors():
    with pytest.raises(ValueError, match="length"):
        evaluate_predictions(["a"], [])
    with pytest.raises(ValueError, match="no predictions"):
        evaluate_predictions([], [])
    with pytest.raises(ValueError, match="answers"):
        cmrc_f1("a", [])
    with pytest.raises(TypeError, match="prediction"):
        sogou_f1(None, ["a"])
