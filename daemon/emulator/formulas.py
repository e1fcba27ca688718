"""Calculated columns: a tiny Coda-formula subset, evaluated at read time.

Supported: `thisRow.<Column>` / `thisRow.[Column Name]` / `[Column Name]`, numbers, quoted
strings, `+ - * /`, parentheses and the functions Year, Month, Day, Today, Floor, Round,
IsBlank. That covers the seed's `Year(thisRow.Дата)` and Today()-based formulas such as
`Year(Today()) - Year(thisRow.Дата)`, whose values drift with the clock while the row's
`updatedAt` stays put, as in Coda (§9). Pure: the row and "today" come in as arguments.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from daemon.emulator.cells import Cell

Getter = Callable[[str], Cell]
Evaluator = Callable[[Getter, date], Cell]

_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>\"[^\"]*\"|'[^']*')|(?P<ref>\[[^\]]+\])"
    r"|(?P<name>[^\W\d][\w]*)|(?P<op>[-+*/(),.]))",
    re.UNICODE,
)


class FormulaError(ValueError):
    """Raised when a formula uses syntax or functions outside the supported subset."""


@dataclass
class _Parser:
    tokens: list[tuple[str, str]]
    columns: Mapping[str, str]
    pos: int = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise FormulaError(f"expected {value or 'a term'} at token {self.pos}")
        self.pos += 1
        return token

    def expression(self) -> Evaluator:
        left = self.term()
        while (token := self.peek()) and token[1] in "+-":
            self.take()
            left = _binary(token[1], left, self.term())
        return left

    def term(self) -> Evaluator:
        left = self.factor()
        while (token := self.peek()) and token[1] in "*/":
            self.take()
            left = _binary(token[1], left, self.factor())
        return left

    def factor(self) -> Evaluator:
        kind, text = self.take()
        if kind == "num":
            number = float(text) if "." in text else int(text)
            return lambda get, today: number
        if kind == "str":
            return lambda get, today: text[1:-1]
        if text == "(":
            inner = self.expression()
            self.take(")")
            return inner
        if text == "-":
            inner = self.factor()
            return lambda get, today: -_num(inner(get, today))
        if kind == "ref":
            return self._column(text[1:-1])
        if kind == "name" and text == "thisRow":
            self.take(".")
            _, name = self.take()
            return self._column(name[1:-1] if name.startswith("[") else name)
        if kind == "name":
            self.take("(")
            args: list[Evaluator] = []
            while (token := self.peek()) and token[1] != ")":
                args.append(self.expression())
                if (token := self.peek()) and token[1] == ",":
                    self.take()
            self.take(")")
            return _call(text, args)
        raise FormulaError(f"unexpected {text!r}")

    def _column(self, name: str) -> Evaluator:
        column_id = self.columns.get(name)
        if column_id is None:
            raise FormulaError(f"unknown column {name!r}")
        return lambda get, today: get(column_id)


def _num(value: Any) -> float:
    if value is None or value == "":
        return 0.0
    if isinstance(value, date):
        return float(value.toordinal())
    return float(value)


def _binary(op: str, left: Evaluator, right: Evaluator) -> Evaluator:
    def run(get: Getter, today: date) -> Cell:
        a, b = left(get, today), right(get, today)
        if a is None or b is None:
            return None
        x, y = _num(a), _num(b)
        result = x + y if op == "+" else x - y if op == "-" else x * y if op == "*" else x / y
        return int(result) if float(result).is_integer() else result

    return run


def _date_part(part: str) -> Callable[[Cell], Cell]:
    def run(value: Cell) -> Cell:
        if isinstance(value, datetime | date):
            return int(getattr(value, part))
        return None

    return run


_UNARY: dict[str, Callable[[Cell], Cell]] = {
    "year": _date_part("year"),
    "month": _date_part("month"),
    "day": _date_part("day"),
    "isblank": lambda v: v is None or v == "",
}


def _call(name: str, args: list[Evaluator]) -> Evaluator:
    key = name.lower()
    if key == "today" and not args:
        return lambda get, today: today
    if key in _UNARY and len(args) == 1:
        fn, arg = _UNARY[key], args[0]
        return lambda get, today: fn(arg(get, today))
    if key in ("floor", "round") and 1 <= len(args) <= 2:

        def run(get: Getter, today: date) -> Cell:
            value = args[0](get, today)
            if value is None:
                return None
            step = _num(args[1](get, today)) if len(args) == 2 else 1.0
            scaled = _num(value) / (step or 1.0)
            result = (math.floor(scaled) if key == "floor" else round(scaled)) * (step or 1.0)
            return int(result) if float(result).is_integer() else result

        return run
    raise FormulaError(f"unsupported function {name}({len(args)} args)")


def compile_formula(formula: str, columns_by_name: Mapping[str, str]) -> Evaluator:
    """Compile `formula`; `columns_by_name` maps column names (and ids) to column ids."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = formula.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise FormulaError(f"cannot parse {text[pos:]!r}")
        kind = match.lastgroup or "op"
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    parser = _Parser(tokens, columns_by_name)
    evaluator = parser.expression()
    if parser.peek() is not None:
        raise FormulaError(f"unexpected trailing {parser.peek()!r}")
    return evaluator
