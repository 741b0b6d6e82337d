"""A small synthetic Chinese corpus for fast tests (repetitive, so an MLM learns it quickly)."""

from __future__ import annotations

import random


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    subjects = ["我们", "他们", "北京", "上海", "老师", "学生"]
    verbs = ["喜欢", "研究", "访问", "讨论"]
    objects = ["天安门", "长城", "数学", "历史", "音乐"]
    return [rng.choice(subjects) + rng.choice(verbs) + rng.choice(objects) + "。" for _ in range(n)]
