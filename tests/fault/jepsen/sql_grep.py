#!/usr/bin/env python3
"""sql_grep.py — fails on any SQL text built at run time in the C sources.

    python3 sql_grep.py [ROOT...]     default: app/ and tests/ of this repo

API.md's promise "every SQL statement parameterised" as a check over the code:
  1. every call that takes SQL text — libpq's PQexec, PQexecParams, PQprepare,
     PQsendQuery, PQsendQueryParams, PQsendPrepare, and every function that
     hands one of its own parameters on as that text (found by following the
     calls to a fixed point: pgsql_exec, exec_simple, ...) — gets, as its SQL
     argument, only
       * string literals (adjacent ones concatenated), or NULL,
       * a name defined in the same file as `static const char NAME[] =
         "literal" ...;` (or a #define of literals),
       * T[i].field of a static const table in the same file whose entries
         hold only literals, such names, numbers and upper-case constants,
       * a parameter of the enclosing function, when that function is itself
         such a call (then its callers are checked instead);
  2. no printf-family call (sprintf, snprintf, vsnprintf, asprintf,
     buf_printf, ...) and no strcat/strcpy/memcpy has a format or source
     literal that reads like SQL (SELECT ... FROM, INSERT INTO, UPDATE ... SET,
     DELETE FROM): text like that is SQL being assembled.
Anything else is reported with file and line, and the test fails.

Before scanning the tree it scans sql_grep_bad.c (next to this file), whose
every marked line builds SQL in a different way, and sql_grep_good.c, which
does it right: each BAD line must be reported and nothing in the good file,
so the checker is known to catch what it claims.
"""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))

# libpq: function -> index of its SQL argument
LIBPQ_SINKS = {"PQexec": 1, "PQexecParams": 1, "PQsendQuery": 1, "PQsendQueryParams": 1,
               "PQprepare": 2, "PQsendPrepare": 2}
PRINTF_LIKE = re.compile(r"^(v?s?n?printf|v?asprintf|buf_v?printf|buf_append\w*|strn?cat|"
                         r"strn?cpy|stpn?cpy|memcpy|memmove|strlcat|strlcpy|fprintf|dprintf)$")
SQL_TEXT = re.compile(r"\b(SELECT\b.*\bFROM|INSERT\s+INTO|UPDATE\s+\w+.*\bSET|DELETE\s+FROM|"
                      r"CREATE\s+(TABLE|INDEX)|DROP\s+TABLE|ALTER\s+TABLE|WHERE\s+\w+\s*=)\b",
                      re.IGNORECASE | re.DOTALL)
KEYWORDS = {"if", "while", "for", "switch", "return", "sizeof", "do", "else", "case"}

TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<pp>^[ \t]*\#[^\n]*(?:\\\n[^\n]*)*)
  | (?P<str>L?"(?:\\.|[^"\\\n])*")
  | (?P<chr>'(?:\\.|[^'\\\n])*')
  | (?P<id>[A-Za-z_]\w*)
  | (?P<num>\d[\w.]*)
  | (?P<op>->|\+\+|--|<<=|>>=|[-+*/%&|^!=<>]=|&&|\|\||<<|>>|[{}()\[\];,.?:~!%^&*+\-/<>=|])
""", re.VERBOSE | re.DOTALL | re.MULTILINE)


class Tok:
    __slots__ = ("kind", "text", "line")

    def __init__(self, kind, text, line):
        self.kind, self.text, self.line = kind, text, line


def tokenize(src):
    toks, defines, pos, line = [], {}, 0, 1
    while pos < len(src):
        m = TOKEN.match(src, pos)
        if not m:
            pos += 1
            continue
        kind = m.lastgroup
        text = m.group()
        if kind == "pp":
            d = re.match(r"\s*#\s*define\s+(\w+)\s+(.*)", text.replace("\\\n", " "), re.DOTALL)
            if d:
                defines[d.group(1)] = (d.group(2).strip(), line)
        elif kind not in ("ws", "comment"):
            toks.append(Tok(kind, text, line))
        line += text.count("\n")
        pos = m.end()
    return toks, defines


def split_args(toks, i):
    """toks[i] is '('; returns (list of arg token lists, index after ')')."""
    depth, args, cur = 0, [], []
    j = i
    while j < len(toks):
        t = toks[j].text
        if t in "([{":
            depth += 1
            if depth > 1:
                cur.append(toks[j])
        elif t in ")]}":
            depth -= 1
            if depth == 0:
                args.append(cur)
                return args, j + 1
            cur.append(toks[j])
        elif t == "," and depth == 1:
            args.append(cur)
            cur = []
        else:
            cur.append(toks[j])
        j += 1
    return args, j


class Unit:
    """One C file: tokens, functions (name -> (params, body range)), constants."""

    def __init__(self, path, src=None):
        self.path = path
        if src is None:
            with open(path, encoding="utf-8", errors="replace") as f:
                src = f.read()
        self.toks, self.defines = tokenize(src)
        self.funcs = []        # (name, [param names], start, end)
        self.literal_names = set()
        self.tables = {}       # name -> list of initializer token lists
        self.readonly = {}     # function -> its const char * parameters
        self._scan()

    def _scan(self):
        toks = self.toks
        depth = 0
        i = 0
        while i < len(toks):
            t = toks[i]
            if t.text == "{":
                depth += 1
            elif t.text == "}":
                depth -= 1
            elif depth == 0 and t.kind == "id" and i + 1 < len(toks) and toks[i + 1].text == "(" \
                    and t.text not in KEYWORDS:
                args, after = split_args(toks, i + 1)
                # skip attributes between ')' and '{'
                k = after
                while k < len(toks) and toks[k].text == "__attribute__":
                    _, k = split_args(toks, k + 1)
                if k < len(toks) and toks[k].text == "{":
                    end = self._match_brace(k)
                    params = [a[-1].text for a in args if a and a[-1].kind == "id"]
                    # a read-only text parameter: const char *NAME
                    ro = {a[-1].text for a in args if a and a[-1].kind == "id"
                          and "const" in [x.text for x in a] and "char" in [x.text for x in a]}
                    self.funcs.append((t.text, params, k, end))
                    self.readonly[t.text] = ro
            i += 1
        for i, t in enumerate(toks):
            if t.text != "=" or i < 2:
                continue
            # NAME [ ] = "..." ...;   (static const char)
            j = i - 1
            if toks[j].text == "]" and toks[j - 1].text == "[":
                name = toks[j - 2].text
                decl = [x.text for x in toks[max(0, j - 40):j - 2]]
                k = i + 1
                if toks[k].kind == "str" and "const" in decl and "char" in decl:
                    while toks[k].kind == "str":
                        k += 1
                    if toks[k].text == ";":
                        self.literal_names.add(name)
                elif toks[k].text == "{" and "const" in decl:
                    end = self._match_brace(k)
                    entries, cur, d = [], [], 0
                    for x in toks[k + 1:end]:
                        if x.text == "{":
                            d += 1
                            cur = [] if d == 1 else cur
                            continue
                        if x.text == "}":
                            d -= 1
                            if d == 0:
                                entries.append(cur)
                            continue
                        if d >= 1:
                            cur.append(x)
                    self.tables[name] = entries
        for name, (value, _) in self.defines.items():
            if value and all(m.group("str") for m in TOKEN.finditer(value)
                             if m.lastgroup not in ("ws", "comment")):
                self.literal_names.add(name)

    def _match_brace(self, k):
        depth = 0
        for j in range(k, len(self.toks)):
            if self.toks[j].text == "{":
                depth += 1
            elif self.toks[j].text == "}":
                depth -= 1
                if depth == 0:
                    return j
        return len(self.toks)

    def enclosing(self, idx):
        for name, params, start, end in self.funcs:
            if start <= idx <= end:
                return name, params
        return None, []

    def table_safe(self, name):
        entries = self.tables.get(name)
        if not entries:
            return False
        for entry in entries:
            for x in entry:
                if x.kind in ("str", "num") or x.text in (",", "NULL", "+", "-", "*", "(", ")"):
                    continue
                if x.kind == "id" and (x.text in self.literal_names or x.text.isupper()):
                    continue
                if x.text == "." or (x.kind == "id" and any(
                        e is x and i + 1 < len(entry) and entry[i + 1].text == "="
                        for i, e in enumerate(entry))):
                    continue  # designated initializer: .sql = ...
                return False
        return True


def safe_expr(unit, arg, params):
    """'literal' | 'param:NAME' | None (unsafe) for one SQL argument."""
    texts = [t.text for t in arg]
    while texts and texts[0] == "(" and texts[-1] == ")":
        arg, texts = arg[1:-1], texts[1:-1]
    if arg and all(t.kind == "str" for t in arg):
        return "literal"
    if texts in (["NULL"], ["0"]):
        return "literal"
    if len(arg) == 1 and arg[0].kind == "id":
        name = arg[0].text
        if name in unit.literal_names:
            return "literal"
        if name in params:
            return f"param:{name}"
        return None
    # T[i].field or T[i]->field
    if len(arg) >= 6 and arg[0].kind == "id" and texts[1] == "[" and "]" in texts \
            and texts[texts.index("]") + 1] in (".", "->") and texts[-1] == arg[-1].text:
        if unit.table_safe(arg[0].text):
            return "literal"
    return None


def call_counts(units):
    """function name -> number of calls to it in units (not its definition)."""
    counts = {}
    for u in units:
        for i, t in enumerate(u.toks):
            if t.kind == "id" and i + 1 < len(u.toks) and u.toks[i + 1].text == "(":
                fname, _ = u.enclosing(i)
                if fname is not None and fname != t.text:
                    counts[t.text] = counts.get(t.text, 0) + 1
    return counts


def scan(units):
    """Returns (findings, sink calls checked, wrappers found).

    A parameter is accepted as SQL text only when it is a const char * of a
    function that is called somewhere (its callers are then checked in its
    place): text passed in through a writable buffer, or through a function
    nobody calls with a constant, is not."""
    called = call_counts(units)
    sinks = {}   # function -> SQL argument index
    sinks.update(LIBPQ_SINKS)
    findings, checked = [], 0
    changed = True
    while changed:  # wrappers: a function passing its parameter on as SQL
        changed = False
        for u in units:
            for i, t in enumerate(u.toks):
                if t.kind != "id" or t.text not in sinks or i + 1 >= len(u.toks) \
                        or u.toks[i + 1].text != "(":
                    continue
                fname, params = u.enclosing(i)
                if not fname or fname == t.text:
                    continue
                args, _ = split_args(u.toks, i + 1)
                idx = sinks[t.text]
                if idx >= len(args):
                    continue
                verdict = safe_expr(u, args[idx], params)
                if verdict and verdict.startswith("param:") and fname not in sinks \
                        and verdict[6:] in u.readonly.get(fname, ()) and called.get(fname):
                    sinks[fname] = params.index(verdict[6:])
                    changed = True
    for u in units:
        for i, t in enumerate(u.toks):
            if t.kind != "id" or i + 1 >= len(u.toks) or u.toks[i + 1].text != "(":
                continue
            fname, params = u.enclosing(i)
            if fname is None or fname == t.text:
                continue  # a declaration or the definition itself
            args, _ = split_args(u.toks, i + 1)
            if t.text in sinks:
                idx = sinks[t.text]
                if idx >= len(args):
                    continue
                checked += 1
                verdict = safe_expr(u, args[idx], params)
                if verdict is None or (verdict.startswith("param:") and (
                        fname not in sinks or sinks[fname] != params.index(verdict[6:]))):
                    expr = " ".join(x.text for x in args[idx])[:120]
                    findings.append(f"{u.path}:{t.line}: {t.text}() in {fname}() gets SQL "
                                    f"text that is not a literal or a constant: {expr}")
            elif PRINTF_LIKE.match(t.text):
                for a in args:
                    lit = "".join(x.text[1:-1] for x in a if x.kind == "str")
                    if lit and SQL_TEXT.search(lit):
                        findings.append(f"{u.path}:{t.line}: {t.text}() in {fname}() builds "
                                        f"SQL text: \"{lit[:80]}\"")
                        break
    return findings, checked, sorted(k for k in sinks if k not in LIBPQ_SINKS)


def c_files(roots):
    for root in roots:
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if not x.startswith(("build", "."))]
            for f in files:
                if f.endswith((".c", ".h")):
                    yield os.path.join(d, f)


def self_test():
    bad = Unit(os.path.join(HERE, "sql_grep_bad.c"))
    good = Unit(os.path.join(HERE, "sql_grep_good.c"))
    with open(bad.path, encoding="utf-8") as f:
        want = {n for n, line in enumerate(f, 1) if "/* BAD" in line}
    found, _, _ = scan([bad])
    got = {int(x.split(":")[1]) for x in found}
    missed = sorted(want - got)
    extra_good, checked_good, _ = scan([good])
    problems = []
    if missed:
        problems.append(f"self-test: lines {missed} of {bad.path} build SQL and were not reported")
    if got - want:
        problems.append(f"self-test: lines {sorted(got - want)} of {bad.path} were reported "
                        f"but are not marked BAD")
    if extra_good or not checked_good:
        problems.append(f"self-test: {good.path}: {extra_good or 'no SQL call found'}")
    print(f"sql_grep: self-test: {len(want & got)} of {len(want)} planted string-built "
          f"statements caught, {checked_good} correct calls accepted", flush=True)
    return problems, len(want)


def main(argv):
    roots = argv or [os.path.join(REPO, "app"), os.path.join(REPO, "tests")]
    problems, planted = self_test()
    units = [Unit(p) for p in c_files(roots)
             if not p.startswith(HERE + os.sep)]  # the planted fixtures live here
    findings, checked, wrappers = scan(units)
    print(f"sql_grep: {len(units)} C files, {checked} calls that take SQL text checked "
          f"(wrappers found: {', '.join(wrappers) or 'none'})", flush=True)
    out_dir = os.environ.get("RG_RELIABILITY_DIR")
    result = "pass" if not (problems or findings) else \
        f"FAIL: {len(findings)} string-built SQL, {len(problems)} self-test problems"
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "fault_sql_grep.tsv"), "w", encoding="utf-8") as f:
            f.write(f"SQL built from strings (security)\tscan of every C source: SQL argument of "
                    f"libpq calls and their wrappers, SQL-looking printf/strcat; {planted} planted "
                    f"cases caught first\t{checked}\t{result}\n")
    for p in problems + findings:
        print("  " + p, flush=True)
    if checked == 0:
        print("sql_grep: no call that takes SQL text was found: the scan is broken", flush=True)
        return 1
    print(f"sql_grep: {result}", flush=True)
    return 0 if result == "pass" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
