"""Values as a person reads them: numbers to 4 significant digits, long vectors as min/median/max and a sparkline,
dicts as small key/value tables, never a Python repr.

number      one number as text (ints exact, floats to 4 significant digits, no 16-digit floats)
percent     a share in [0, 1] as '12.5%'
label       a snake_case key as words ('k_chosen_from_budget' -> 'k chosen from budget')
value_html  any JSON value as escaped HTML (the report's diagnostics and options)
sparkline   a small inline SVG line of a numeric vector
Plain code, no Prefect; html.py and tasks/report.py use it.
"""

import html
import math
import statistics
from typing import Any

SHORT_LIST = 6  # lists up to this length are written out; longer numeric ones are summarised
LIST_ITEMS_SHOWN = 8  # items of a long non-numeric list written before '… (N more)'
MAX_DEPTH = 3


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def number(value: Any, digits: int = 4) -> str:
    """A number as text: ints (and bools) as they are, floats to `digits` significant digits.

    Large floats get thousands separators instead of an exponent (58,390 rather than 5.839e+04); tiny ones keep
    an exponent with `digits - 1` decimals at most (1e-06).
    """
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if 10_000 <= abs(value) < 1e15:
        rounded = round(value, digits - 1 - magnitude)
        return f"{int(rounded):,}"
    return f"{value:.{digits}g}"


def percent(share: float | None, digits: int = 3) -> str:
    """A share in [0, 1] as a percentage to `digits` significant digits ('12.5%', '0%', '100%')."""
    if share is None or (isinstance(share, float) and math.isnan(share)):
        return "n/a"
    return f"{float(f'{100 * share:.{digits}g}'):g}%"


def label(key: Any) -> str:
    """A diagnostic or option key as words."""
    return str(key).replace("_", " ")


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summary(values: list) -> str:
    """'22 values: min 0.0629, median 0.0833, max 0.14' (non-finite values are counted, not summarised)."""
    finite = [float(v) for v in values if is_number(v) and math.isfinite(float(v))]
    if not finite:
        return f"{len(values)} values, none finite"
    text = (f"{len(values)} values: min {number(min(finite))}, median {number(statistics.median(finite))}, "
            f"max {number(max(finite))}")
    return text + (f" ({len(values) - len(finite)} not finite)" if len(finite) < len(values) else "")


def sparkline(values: list, width: int = 160, height: int = 28) -> str:
    """A small inline SVG of a numeric vector in order (not a `chart`: no axes, no caption); '' below 2 values."""
    vals = [float(v) for v in values if is_number(v) and math.isfinite(float(v))]
    if len(vals) < 2:
        return ""
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    step = (width - 4) / (len(vals) - 1)
    pts = " ".join(f"{2 + i * step:.1f},{height - 3 - (v - lo) / span * (height - 6):.1f}" for i, v in enumerate(vals))
    return (f'<svg class="spark" role="img" aria-label="{len(vals)} values from {esc(number(lo))} to {esc(number(hi))}" '
            f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
            f'<polyline fill="none" stroke="#2b8a3e" stroke-width="1.4" points="{pts}"/></svg>')


def inline(value: Any) -> str:
    """A scalar or short flat list as plain text (not HTML-escaped): numbers formatted, lists comma-separated."""
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    if is_number(value) or isinstance(value, bool):
        return number(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(inline(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return "; ".join(f"{label(k)}: {inline(v)}" for k, v in value.items()) if value else "none"
    return str(value)


def value_html(value: Any, depth: int = 0) -> str:
    """Any JSON value as escaped HTML: dicts as key/value tables, long numeric lists as a summary and a sparkline,
    other lists comma-separated (the first LIST_ITEMS_SHOWN, then a count)."""
    if isinstance(value, dict):
        if not value:
            return "none"
        if depth >= MAX_DEPTH:
            return esc(inline(value))
        rows = "".join(f"<tr><td>{esc(label(k))}</td><td>{value_html(v, depth + 1)}</td></tr>" for k, v in value.items())
        return f'<table class="kv inner"><tbody>{rows}</tbody></table>'
    if isinstance(value, (list, tuple)):
        if not value:
            return "none"
        if all(is_number(v) for v in value):
            if len(value) <= SHORT_LIST:
                return esc(inline(value))
            return f'<span class="vector">{esc(summary(list(value)))}</span> {sparkline(list(value))}'
        if all(isinstance(v, dict) for v in value) and depth < MAX_DEPTH:
            return "".join(value_html(v, depth + 1) for v in value[:LIST_ITEMS_SHOWN]) + _more(value)
        parts = [inline(v) if not isinstance(v, (list, tuple)) else f"({inline(v)})" for v in value[:LIST_ITEMS_SHOWN]]
        return esc(", ".join(parts)) + _more(value)
    return esc(inline(value))


def _more(value: list) -> str:
    return f" … ({len(value) - LIST_ITEMS_SHOWN} more)" if len(value) > LIST_ITEMS_SHOWN else ""
