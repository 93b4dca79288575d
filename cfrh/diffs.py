"""Why two records of what something was made from differ, in words (for refusals and logs)."""

from __future__ import annotations


def first_difference(old: dict | None, new: dict, prefix: str = "") -> str:
    """The first key (in sorted order, nested ones joined by spaces) whose values differ, with
    both values; a sha256 is shortened to 12 characters."""
    if old is None:
        return "it was made by an older cfrh that did not record its inputs"
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            return first_difference(a, b, f"{prefix}{key} ")
        short = lambda v: (v[:12] + "…") if isinstance(v, str) and len(v) == 64 else v
        return f"{prefix}{key}: {short(a)} then, {short(b)} now"
    return "its inputs differ"
