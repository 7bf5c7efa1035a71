"""The filter language of ``veml data filter --where`` (and ``POST /data/{ref}/filter``).

A filter is one boolean expression over a version's columns, written in SQL syntax.  It is parsed
by sqlglot (DuckDB dialect) into a syntax tree, and only an allow-listed grammar is accepted:

* the version's column names (unqualified; quoted with ``"..."`` when they are keywords);
* literals: numbers, strings, TRUE / FALSE, NULL;
* comparison ``= != <> < <= > >=`` and ``IS [NOT] DISTINCT FROM``; boolean ``AND OR NOT``;
  arithmetic ``+ - * / %`` and unary minus; parentheses;
* ``[NOT] IN (literal, ...)``, ``[NOT] LIKE`` / ``ILIKE`` (with ``ESCAPE``), ``[NOT] BETWEEN``,
  ``IS [NOT] NULL`` / ``TRUE`` / ``FALSE``;
* ``CAST`` / ``TRY_CAST`` / ``::`` to a plain type (:data:`CAST_TYPES`);
* the scalar functions of :data:`FUNCTIONS`.

Everything else (subqueries, CTEs, table functions such as ``read_csv``, PRAGMA, ATTACH, COPY, SET,
other functions, ``*``, placeholders, more than one statement) is refused with the offending token
and its 1-based character position.  What DuckDB runs is generated from the validated tree, with
every column reference re-quoted as the exact column name: never the user's text.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from veml.errors import FilterError

# sqlglot warns through `logging` when it falls back to parsing a statement as a raw command
# ("LOAD httpfs"); that statement is refused below, and the warning must not become a second
# stderr line next to the one ``error:`` line.
logging.getLogger("sqlglot").addHandler(logging.NullHandler())

DIALECT = "duckdb"
MAX_EXPRESSION_CHARS = 10_000
MAX_NESTING = 32  # parentheses (and function calls) inside one another

# name as written -> the sqlglot node it parses to (aliases sqlglot folds into the same node, such as
# ``lcase`` or ``ceiling``, are the same function and accepted too).
FUNCTIONS: dict[str, type[exp.Expression]] = {
    "lower": exp.Lower, "upper": exp.Upper, "trim": exp.Trim,
    "length": exp.Length, "strlen": exp.Anonymous,
    "substr": exp.Substring, "substring": exp.Substring,
    "starts_with": exp.StartsWith, "ends_with": exp.EndsWith, "contains": exp.Contains,
    "prefix": exp.Anonymous, "suffix": exp.Anonymous,
    "regexp_matches": exp.RegexpLike, "regexp_full_match": exp.RegexpFullMatch,
    "abs": exp.Abs, "round": exp.Round, "floor": exp.Floor, "ceil": exp.Ceil, "sqrt": exp.Sqrt,
    "ln": exp.Ln, "exp": exp.Exp, "sign": exp.Sign, "isnan": exp.IsNan, "isinf": exp.IsInf,
    "coalesce": exp.Coalesce, "nullif": exp.Nullif, "least": exp.Least, "greatest": exp.Greatest,
}
_FUNCTION_CLASSES = {cls for cls in FUNCTIONS.values() if cls is not exp.Anonymous}
_REGEXPS = (exp.RegexpLike, exp.RegexpFullMatch)
_ANONYMOUS = {name for name, cls in FUNCTIONS.items() if cls is exp.Anonymous}

_T = exp.DataType.Type
CAST_TYPES = {
    _T.BOOLEAN, _T.TINYINT, _T.SMALLINT, _T.INT, _T.BIGINT, _T.INT128, _T.UTINYINT, _T.USMALLINT,
    _T.UINT, _T.UBIGINT, _T.FLOAT, _T.DOUBLE, _T.DECIMAL, _T.VARCHAR, _T.TEXT, _T.CHAR,
    _T.DATE, _T.TIME, _T.TIMESTAMP, _T.TIMESTAMPTZ,
}

_OPERATORS = (
    exp.And, exp.Or, exp.Not, exp.Paren, exp.Neg,
    exp.EQ, exp.NEQ, exp.LT, exp.LTE, exp.GT, exp.GTE, exp.NullSafeEQ, exp.NullSafeNEQ,
    exp.Add, exp.Sub, exp.Mul, exp.Div, exp.Mod,
    exp.Like, exp.ILike, exp.Escape, exp.Between,
)
_LITERALS = (exp.Literal, exp.Boolean, exp.Null)
# Refused constructs, named, with the keyword to point at (they carry no position of their own).
_KEYWORDS: dict[type[exp.Expression], tuple[str, tuple[str, ...]]] = {
    exp.Subquery: ("a subquery", ("SELECT", "FROM")), exp.Select: ("a subquery", ("SELECT", "FROM")),
    exp.Union: ("a subquery", ("SELECT",)), exp.Values: ("VALUES", ("VALUES",)),
    exp.Exists: ("EXISTS", ("EXISTS",)), exp.Star: ("'*'", ("*",)), exp.Window: ("a window (OVER)", ("OVER",)),
    exp.Case: ("CASE", ("CASE",)), exp.Placeholder: ("a parameter placeholder", ("?", "$")),
    exp.Alias: ("an alias", ()), exp.Array: ("a list", ("[",)), exp.Interval: ("INTERVAL", ("INTERVAL",)),
    exp.Pragma: ("PRAGMA", ("PRAGMA",)), exp.Attach: ("ATTACH", ("ATTACH",)), exp.Detach: ("DETACH", ("DETACH",)),
    exp.Copy: ("COPY", ("COPY",)), exp.Set: ("SET", ("SET",)), exp.Drop: ("DROP", ("DROP",)),
    exp.Create: ("CREATE", ("CREATE",)), exp.Insert: ("INSERT", ("INSERT",)), exp.Update: ("UPDATE", ("UPDATE",)),
    exp.Delete: ("DELETE", ("DELETE",)), exp.Use: ("USE", ("USE",)), exp.Install: ("INSTALL", ("INSTALL",)),
    exp.Describe: ("DESCRIBE", ("DESCRIBE",)), exp.Summarize: ("SUMMARIZE", ("SUMMARIZE",)),
}


def compile_filter(text: str, columns: Iterable[str]) -> str:
    """The DuckDB SQL of a validated filter over ``columns``; :class:`FilterError` otherwise."""
    if not text or not text.strip():
        raise FilterError("filter expression is empty")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise FilterError(f"filter expression is {len(text)} characters long (at most {MAX_EXPRESSION_CHARS})")
    try:
        tokens, tree = _parse(text)
        _Validator(text, tokens, columns).check(tree)
        return tree.sql(dialect=DIALECT)
    except RecursionError:
        raise FilterError("filter expression is nested too deeply") from None


def _parse(text: str) -> tuple[list, exp.Expression]:
    dialect = sqlglot.Dialect.get_or_raise(DIALECT)
    try:
        tokens = dialect.tokenize(text)
    except TokenError:
        raise FilterError("filter expression does not parse: an unterminated quote or an invalid character") from None
    depth = 0
    for tok in tokens:
        depth += {TokenType.L_PAREN: 1, TokenType.R_PAREN: -1}.get(tok.token_type, 0)
        if depth > MAX_NESTING:
            raise FilterError(f"filter expression is nested more than {MAX_NESTING} parentheses deep "
                              f"at position {tok.start + 1}")
        if tok.token_type == TokenType.SEMICOLON:
            raise FilterError(f"filter expression does not parse: ';' at position {tok.start + 1} "
                              "(a filter is one expression, not statements)")
    try:
        trees = dialect.parser().parse(tokens, text)
    except ParseError as exc:
        raise FilterError(f"filter expression does not parse: {_parse_error(text, exc)}") from None
    trees = [t for t in trees if t is not None]
    if not trees:
        raise FilterError("filter expression is empty")
    if len(trees) > 1:  # never without a ';', which is refused above; kept as a guard
        raise FilterError("filter expression does not parse: more than one statement")
    return tokens, trees[0]


def _parse_error(text: str, exc: ParseError) -> str:
    err = exc.errors[0] if exc.errors else {}
    token = (err.get("highlight") or "").strip()
    line, col = err.get("line"), err.get("col")
    where = ""
    if isinstance(line, int) and isinstance(col, int) and token:
        lines = text.split("\n")
        end = sum(len(x) + 1 for x in lines[: line - 1]) + col
        where = f" at position {max(end - len(token) + 1, 1)}"
    description = str(err.get("description") or "")
    if description.startswith("Required keyword"):
        return f"incomplete expression after {token!r}{where}" if token else "incomplete expression"
    if token:
        return f"unexpected {token!r}{where}"
    return description.split("\n")[0] or "invalid expression"


class _Validator:
    def __init__(self, text: str, tokens: Sequence, columns: Iterable[str]) -> None:
        self.text = text
        self.tokens = tokens
        self.columns: dict[str, str] = {}
        for name in columns:
            self.columns.setdefault(name.lower(), name)  # DuckDB resolves names case-insensitively

    def check(self, tree: exp.Expression) -> None:
        stack = [tree]
        while stack:
            node = stack.pop()
            if isinstance(node, exp.Column):
                self._column(node)
                continue  # its identifier is checked and replaced
            if isinstance(node, exp.DataType) and node.arg_key == "to" and isinstance(node.parent, (exp.Cast, exp.TryCast)):
                continue  # checked with its CAST
            self._node(node)
            stack.extend(reversed(list(node.iter_expressions())))

    def _node(self, node: exp.Expression) -> None:
        if isinstance(node, _LITERALS):
            if isinstance(node, exp.Literal) and not isinstance(node.this, str):
                self._refuse(node, "this literal")
            return
        if type(node) in _KEYWORDS:
            what = _KEYWORDS[type(node)][0]
            if isinstance(node, exp.Select) and node.args.get("with_"):
                what = "a CTE (WITH)"
            self._refuse(node, what)
        if isinstance(node, exp.Command):
            self._refuse(node, f"the statement {str(node.this).upper()!r}")
        if isinstance(node, _OPERATORS):
            if isinstance(node, exp.Escape) and not isinstance(node.this, (exp.Like, exp.ILike)):
                self._refuse(node, "ESCAPE outside LIKE")
            return
        if isinstance(node, exp.Is):
            if not isinstance(node.expression, (exp.Null, exp.Boolean)):
                self._refuse(node, "IS with something other than NULL, TRUE or FALSE")
            return
        if isinstance(node, exp.In):
            if any(node.args.get(k) for k in ("query", "unnest", "field")):
                self._refuse(node.args.get("query") or node, "a subquery" if node.args.get("query") else "IN without a list")
            if not node.expressions:
                self._refuse(node, "an empty IN list")
            for item in node.expressions:
                value = item.this if isinstance(item, exp.Neg) else item
                if not isinstance(value, _LITERALS):
                    self._refuse(item, "a non-literal IN list item")
            return
        if isinstance(node, (exp.Cast, exp.TryCast)):
            self._cast(node)
            return
        if isinstance(node, exp.Func):
            self._function(node)
            return
        self._refuse(node, f"'{_snippet(node)}'")

    def _column(self, node: exp.Column) -> None:
        if any(node.args.get(k) for k in ("table", "db", "catalog")):
            self._refuse(node, f"qualified name '{_snippet(node)}' (write the column name alone)")
        ident = node.this
        if not isinstance(ident, exp.Identifier):
            self._refuse(node, f"'{_snippet(node)}'")
        name = self.columns.get(ident.name.lower())
        if name is None:
            raise FilterError(f"filter expression: unknown column {ident.name!r}{self._at(ident)}")
        node.set("this", exp.to_identifier(name, quoted=True))

    def _cast(self, node: exp.Expression) -> None:
        extra = [k for k in ("format", "action", "default") if node.args.get(k) is not None]
        if extra:
            self._refuse(node, f"CAST ... {extra[0].upper()}")
        to = node.args.get("to")
        if not isinstance(to, exp.DataType) or to.this not in CAST_TYPES or to.args.get("nested"):
            self._refuse(node, f"a cast to {_snippet(to) if to is not None else '?'}")
        for param in to.expressions:
            if not (isinstance(param, exp.DataTypeParam) and isinstance(param.this, exp.Literal)
                    and not param.this.is_string):
                self._refuse(node, f"a cast to {_snippet(to)}")

    def _function(self, node: exp.Func) -> None:
        if isinstance(node, exp.Anonymous):
            name = str(node.name).lower()
            if name in _ANONYMOUS:
                return
        else:
            name = node.sql_name().lower()
            if type(node) in _FUNCTION_CLASSES and (node.meta or not isinstance(node, exp.RegexpLike)):
                if isinstance(node, _REGEXPS):
                    self._regexp(node)
                return
        if isinstance(node, exp.RegexpLike):  # DuckDB's ``~`` is a full match: refused rather than rewritten
            self._refuse(node, "the operator '~' (call regexp_full_match or regexp_matches)")
        raise FilterError(f"filter expression: function {name!r} is not allowed{self._at(node)} "
                          f"(allowed: {', '.join(sorted(FUNCTIONS))})")

    def _regexp(self, node: exp.Expression) -> None:
        """A pattern (and flags) must be a string literal: compiled once, not once per row."""
        for key in ("expression", "flag", "options"):
            arg = node.args.get(key)
            if arg is not None and not (isinstance(arg, exp.Literal) and arg.is_string):
                self._refuse(arg, f"a {'pattern' if key == 'expression' else 'flag'} that is not a string literal")

    def _refuse(self, node: exp.Expression, what: str) -> None:
        raise FilterError(f"filter expression: {what} is not allowed{self._at(node)}")

    def _at(self, node: exp.Expression) -> str:
        pos = self._position(node)
        return f" at position {pos}" if pos is not None else ""

    def _position(self, node: exp.Expression) -> int | None:
        """1-based character position of ``node``: its own token, its keyword, or its first token."""
        start = node.meta.get("start")
        if isinstance(start, int):
            return start + 1
        keywords = ("WITH",) if isinstance(node, exp.Select) and node.args.get("with_") else _KEYWORDS.get(type(node), ("", ()))[1]
        if isinstance(node, exp.Command):
            keywords = (str(node.this).upper(),)
        for tok in self.tokens:
            if tok.text.upper() in keywords:
                return tok.start + 1
        starts = [n.meta["start"] for n in node.walk() if isinstance(n.meta.get("start"), int)]
        return min(starts) + 1 if starts else None


def _snippet(node: exp.Expression | None, limit: int = 40) -> str:
    text = node.sql(dialect=DIALECT) if node is not None else ""
    return text if len(text) <= limit else text[: limit - 1] + "…"
