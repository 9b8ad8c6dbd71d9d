"""The ``list`` action of every controller: filters, LIKE search, sort and paging, as HostFact does them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from tasks.simulator.envelope import ApiFailure, Outcome, Record
from tasks.simulator.money import amount_text, to_int
from tasks.simulator.params import Params
from tasks.simulator.render import scalar

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}( \d{2}(:\d{2}(:\d{2})?)?)?")
DEFAULT_LIMIT = 1000


@dataclass(frozen=True)
class ListSpec:
    """How one controller lists: its columns, defaults and the filters it knows."""

    plural: str
    columns: frozenset[str]
    default_searchat: str
    default_sort: tuple[str, ...]
    default_order: Literal["ASC", "DESC"]
    statuses: frozenset[int] | None = None
    # filter name -> (record field, "date" | "datetime")
    ranges: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # filter name -> record field holding the related id ("debtor" -> "Debtor")
    relations: Mapping[str, str] = field(default_factory=dict)
    # fields computed at render time (PayBefore) that filters may still use
    computed: Mapping[str, Callable[[Record], Any]] = field(default_factory=dict)
    # status filter words besides numbers ("reminders", "summations") -> predicate
    status_words: Mapping[str, Callable[[Record], bool]] = field(default_factory=dict)


def _value(spec: ListSpec, record: Record, name: str) -> Any:
    if name in spec.computed:
        return spec.computed[name](record)
    return record.get(name, "")


def _text(value: Any) -> str:
    if isinstance(value, Decimal):
        return amount_text(value)
    text = scalar(value)
    return text if isinstance(text, str) else ""


def _sort_key(value: Any) -> tuple[int, Any]:
    # Numbers sort as numbers, everything else as text, as MySQL does per column type.
    if isinstance(value, int | Decimal) and not isinstance(value, bool):
        return (0, Decimal(value))
    return (1, _text(value))


def list_records(
    records: Iterable[Record], params: Params, spec: ListSpec, row: Callable[[Record], dict[str, Any]]
) -> Outcome:
    """Filter, search, sort and page ``records``; the envelope gets the rows under ``spec.plural``."""
    given: dict[str, Any] = {}
    selected = list(records)

    status_filter = params.text("status")
    if params.has("status"):
        given["status"] = status_filter
    if status_filter and spec.statuses is not None:
        if status_filter in spec.status_words:
            selected = [r for r in selected if spec.status_words[status_filter](r)]
        else:
            wanted: set[int] = set()
            for part in status_filter.split("|"):
                number = to_int(part)
                if number is None or number not in spec.statuses:
                    raise ApiFailure(f"Invalid filter 'status'. The status '{part}' does not exist")
                wanted.add(number)
            selected = [r for r in selected if r["Status"] in wanted]

    for name, record_field in spec.relations.items():
        related = to_int(params.get(name)) if params.has(name) else None
        if related is not None and related > 0:
            given[name] = str(related)
            selected = [r for r in selected if r.get(record_field) == related]

    for name, (record_field, kind) in spec.ranges.items():
        bounds = params.get(name)
        if not isinstance(bounds, Mapping):
            continue
        low, high = _range(name, kind, bounds)
        given[name] = {"from": low, "to": high}
        if low:
            selected = [r for r in selected if _text(_value(spec, r, record_field)) >= low]
        if high:
            selected = [r for r in selected if "" < _text(_value(spec, r, record_field)) <= high]

    searchat = params.text("searchat")
    if searchat:
        given["searchat"] = searchat
        for column in searchat.split("|"):
            if column not in spec.columns:
                raise ApiFailure("Invalid filter 'searchat'. Please enter valid columns or remove filter")
    search_columns = (searchat or spec.default_searchat).split("|")
    searchfor = params.text("searchfor")
    if searchfor:
        given["searchfor"] = searchfor
        # SQL LIKE '%x%' under a case-insensitive collation: near-misses included, on purpose.
        needle = searchfor.lower()
        selected = [
            r for r in selected if any(needle in _text(_value(spec, r, c)).lower() for c in search_columns)
        ]

    sort = params.text("sort")
    if sort:
        given["sort"] = sort
        if sort not in spec.columns:
            raise ApiFailure("Invalid filter 'sort'. Please enter valid columns or remove filter")
    order = params.text("order")
    if order in ("ASC", "DESC"):
        given["order"] = order
    else:
        order = spec.default_order
    sort_columns = (sort,) if sort else spec.default_sort
    selected.sort(
        key=lambda r: [_sort_key(_value(spec, r, c)) for c in (*sort_columns, "Identifier")],
        reverse=order == "DESC",
    )

    offset = to_int(params.get("offset")) if params.has("offset") else None
    limit = to_int(params.get("limit")) if params.has("limit") else None
    if offset is not None and offset >= 0:
        given["offset"] = str(offset)
    else:
        offset = 0
    if limit is not None and limit > 0:
        given["limit"] = str(limit)
    else:
        limit = DEFAULT_LIMIT
    page = selected[offset : offset + limit]

    outcome = Outcome(key=spec.plural, payload=[row(r) for r in page])
    outcome.meta = {"totalresults": len(selected), "currentresults": len(page), "offset": offset}
    if given:
        outcome.meta["filters"] = given
    return outcome


def _range(name: str, kind: str, bounds: Mapping[str, Any]) -> tuple[str, str]:
    low = str(bounds.get("from") or "").strip()
    high = str(bounds.get("to") or "").strip()
    if kind == "date":
        if (low and not _DATE.fullmatch(low)) or (high and not _DATE.fullmatch(high)):
            raise ApiFailure(f"Invalid date(s) for '{name}'. Please enter valid dates with format yyyy-mm-dd")
        return low, high
    if (low and not _DATETIME.fullmatch(low)) or (high and not _DATETIME.fullmatch(high)):
        raise ApiFailure(
            f"Invalid datetime(s) for '{name}'. Please enter valid dates with format 'yyyy-mm-dd' or "
            "'yyyy-mm-dd hh:ii:ss'"
        )
    # HostFact completes a short "to" with the end of that day, and a short "from" with its start.
    if low:
        low = low + "0000-00-00 00:00:00"[len(low) :]
    if high:
        high = high + "0000-00-00 23:59:59"[len(high) :]
    return low, high
