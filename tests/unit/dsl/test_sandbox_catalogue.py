"""Known sandbox-escape and resource-exhaustion attempts: each is rejected with a clear error
(ReadError when read, or EvaluationError / LimitExceeded when evaluated), using well under a
second of CPU time with the default limits."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mintleaf_server.dsl.errors import DslError, EvaluationError, LimitExceeded, ReadError
from mintleaf_server.dsl.reading import TASK_SCOPE_NAMES, Slot, evaluate_value, read_string

SCOPE: dict[str, Any] = {"_": {"x": 1, "s": "abc", "l": [1, 2, 3]}, "inputs": {0: {}}, "outputs": {}}

# (source, slot, expected error type, fragment of the message)
CATALOGUE: list[tuple[str, Slot, type[DslError], str]] = [
    # --- escapes through attributes --------------------------------------------------------------
    ("$ ().__class__.__mro__", Slot.VALUE, ReadError, "dunder"),
    ("$ ''.__class__.__base__.__subclasses__()", Slot.VALUE, ReadError, "dunder"),
    ("$ _.__init__.__globals__", Slot.VALUE, ReadError, "dunder"),
    ("$ [].__class__", Slot.VALUE, ReadError, "dunder"),
    ("$ str.__dict__", Slot.VALUE, ReadError, "dunder"),
    ("$ __builtins__", Slot.VALUE, ReadError, "unsafe name"),
    ("$ __import__('os').system('true')", Slot.VALUE, ReadError, "unsafe name"),
    ("$ _._x", Slot.VALUE, ReadError, "private"),
    ("$ (x for x in []).gi_frame.f_globals", Slot.VALUE, ReadError, "unsafe attribute"),
    ("$ (x for x in []).gi_code", Slot.VALUE, ReadError, "gi_code"),
    ("$ map(str, []).f_back", Slot.VALUE, ReadError, "f_back"),
    ("$ str.mro()", Slot.VALUE, ReadError, "mro"),
    ("$ len.__self__", Slot.VALUE, ReadError, "dunder"),
    ("$ str.upper", Slot.VALUE, EvaluationError, "no attribute 'upper'"),
    ("$ re.search.func", Slot.VALUE, EvaluationError, "no attribute 'func'"),
    ("$ _.s.upper.args", Slot.VALUE, EvaluationError, "no attribute 'args'"),
    ("$ datetime.datetime.now().tzinfo.utcoffset", Slot.VALUE, EvaluationError, "no attribute"),
    ("$ re.search('a', 'a').re", Slot.VALUE, EvaluationError, "no attribute 're'"),
    ("$ hasattr(_, '__class__') or getattr", Slot.VALUE, ReadError, "unknown name 'getattr'"),
    ("$ type(_)", Slot.VALUE, ReadError, "unknown name 'type'"),
    ("$ eval('1') + exec('1') + open('/etc/passwd')", Slot.VALUE, ReadError, "unknown names"),
    ("$ vars() or globals() or locals()", Slot.VALUE, ReadError, "unknown names"),
    # --- format-string tricks --------------------------------------------------------------------
    ("$ '{0.__class__}'.format(_)", Slot.VALUE, ReadError, "format"),
    ("$ '{x.__init__.__globals__}'.format_map(_)", Slot.VALUE, ReadError, "format_map"),
    ("$ f'{_.__class__}'", Slot.VALUE, ReadError, "dunder"),
    ("$ f'{_!r:>99999999}'", Slot.VALUE, LimitExceeded, "format width"),
    ("$ f'{1:{\"9\" * 9}}'", Slot.VALUE, LimitExceeded, "format width"),
    ("$ '%0999999999d' % 1", Slot.VALUE, LimitExceeded, "format width"),
    ("$ '%*d' % (999999999, 1)", Slot.VALUE, EvaluationError, "'*' widths"),
    ("{{ '{0.__class__}'.format(_) }}", Slot.TEXT, ReadError, "format"),
    ("{{ '%0999999999d' | format(1) }}", Slot.TEXT, LimitExceeded, "format width"),
    # --- Jinja escapes ---------------------------------------------------------------------------
    ("{{ cycler.__init__.__globals__ }}", Slot.TEXT, ReadError, "dunder"),
    ("{{ joiner }}{{ lipsum }}{{ namespace }}", Slot.TEXT, ReadError, "unknown names"),
    ("{{ self.__init__ }}", Slot.TEXT, ReadError, "dunder"),
    ("{{ _['__class__'] }}", Slot.TEXT, ReadError, "dunder"),
    ("{{ _|attr('__class__') }}", Slot.TEXT, EvaluationError, "unsafe"),
    ("{% include '/etc/passwd' %}", Slot.TEXT, ReadError, "include"),
    ("{{ range.__module__ }}", Slot.TEXT, ReadError, "dunder"),
    # --- bytes and literals ----------------------------------------------------------------------
    ("$ b'\\x00' * 10", Slot.VALUE, ReadError, "bytes"),
    ("$ _.s.encode()", Slot.VALUE, EvaluationError, "no attribute 'encode'"),
    ("$ 1" + "0" * 5000, Slot.VALUE, ReadError, "invalid Python expression"),
    ("$ " + "-" * 200 + "1", Slot.VALUE, ReadError, "nested deeper"),
    ("$ " + "[" * 150 + "]" * 150, Slot.VALUE, ReadError, "nested"),
    ("$ " + "1+" * 6000 + "1", Slot.VALUE, ReadError, "longer than"),
    # --- lambdas, walrus, statements -------------------------------------------------------------
    ("$ (lambda: 1)()", Slot.VALUE, ReadError, "lambda"),
    ("$ [y := 1]", Slot.VALUE, ReadError, "assignment"),
    ("$ {x for x in _}", Slot.VALUE, ReadError, "set comprehension"),
    ("$ import os", Slot.VALUE, ReadError, "invalid Python expression"),
    ("$ _.l.append(1)", Slot.VALUE, EvaluationError, "no attribute 'append'"),
    ("{{ _.l.append(1) }}", Slot.TEXT, EvaluationError, "no attribute 'append'"),
    # --- exhaustion: numbers ---------------------------------------------------------------------
    ("$ 9**9**9", Slot.VALUE, LimitExceeded, "bits"),
    ("$ 10**10**10", Slot.VALUE, LimitExceeded, "bits"),
    ("$ 1 << 10**10", Slot.VALUE, LimitExceeded, "bits"),
    ("$ reduce(max, [2**60000 * 2**60000])", Slot.VALUE, LimitExceeded, "bits"),
    ("$ round(5, -10**9)", Slot.VALUE, EvaluationError, "ndigits"),
    ("{{ 9 ** (9 ** 9) }}", Slot.TEXT, LimitExceeded, "bits"),
    ("$ int('9' * 100000)", Slot.VALUE, EvaluationError, "ValueError"),
    # --- exhaustion: strings and sequences -------------------------------------------------------
    ("$ 'a' * 10**10", Slot.VALUE, LimitExceeded, "repetition"),
    ("$ 10**10 * 'a'", Slot.VALUE, LimitExceeded, "repetition"),
    ("$ [0] * 10**9", Slot.VALUE, LimitExceeded, "repetition"),
    ("$ [[0] * 10**5] * 10**5", Slot.VALUE, LimitExceeded, ""),
    ("$ [[0] * 1000 for i in range(10**6)]", Slot.VALUE, LimitExceeded, "budget"),
    ("$ ('a' * 10**6).replace('a', 'a' * 10**6)", Slot.VALUE, LimitExceeded, "replace"),
    ("$ ('a' * 1000).replace('', 'b' * 10000)", Slot.VALUE, LimitExceeded, "replace"),
    ("$ 'x'.join(['a' * 10**6] * 1000)", Slot.VALUE, LimitExceeded, "join"),
    ("$ 'x'.center(10**10)", Slot.VALUE, LimitExceeded, "center"),
    ("$ 'x'.zfill(10**10)", Slot.VALUE, LimitExceeded, "zfill"),
    ("$ ('\\t' * 1000).expandtabs(10**6)", Slot.VALUE, LimitExceeded, "expandtabs"),
    ("$ ['a' * 10**6 + 'b' for i in range(10**3)]", Slot.VALUE, LimitExceeded, ""),
    ("$ [_.l * 10**5 for i in range(10**5)]", Slot.VALUE, LimitExceeded, ""),
    ("$ [_.s[:] * 10**5 for i in range(10**5)]", Slot.VALUE, LimitExceeded, ""),
    ("$ [[*range(10**5)] for i in range(10**5)]", Slot.VALUE, LimitExceeded, ""),
    ("$ str([list(range(1000))] * 100000)", Slot.VALUE, LimitExceeded, "characters"),
    ("$ dump_json([list(range(1000))] * 100000)", Slot.VALUE, LimitExceeded, ""),
    ("$ re.sub('', 'x' * 10**4, 'a' * 10**5)", Slot.VALUE, LimitExceeded, "re.sub"),
    ("{{ 'a' * 10**10 }}", Slot.TEXT, LimitExceeded, "repetition"),
    ("{{ 'x' | center(10**10) }}", Slot.TEXT, LimitExceeded, "center"),
    ("{{ 'x\n' * 1000 | indent(10**6) }}", Slot.TEXT, LimitExceeded, "indent"),
    ("{% for i in range(10**6) %}{{ 'x' * 1000 }}{% endfor %}", Slot.TEXT, LimitExceeded, ""),
    # --- exhaustion: iteration and time ----------------------------------------------------------
    ("$ range(10**12)", Slot.VALUE, LimitExceeded, "range"),
    ("$ list(range(10**6, 10**12))", Slot.VALUE, LimitExceeded, "range"),
    ("$ [0 for i in range(10**6) for j in range(10**6)]", Slot.VALUE, LimitExceeded, ""),
    ("$ sum(i * j for i in range(10**6) for j in range(10**6))", Slot.VALUE, LimitExceeded, ""),
    ("$ [sum(range(10**6)) for i in range(10**6)]", Slot.VALUE, LimitExceeded, ""),
    ("$ [sorted(_.l * 300000) for i in range(100)]", Slot.VALUE, LimitExceeded, ""),
    ("$ [('a' * 10**6).count('b') for i in range(10**5)]", Slot.VALUE, LimitExceeded, ""),
    ("$ [('a' * 10**6 == 'a' * 10**6) for i in range(10**5)]", Slot.VALUE, LimitExceeded, ""),
    ("$ len(list(map(str, [list(range(10**5))] * 10**5)))", Slot.VALUE, LimitExceeded, ""),
    ("$ any(x == -1 for x in range(10**6) for y in range(10**6))", Slot.VALUE, LimitExceeded, ""),
    ("$ statistics.mean(list(range(10**6)))", Slot.VALUE, LimitExceeded, ""),
    (
        "{% for i in range(10**6) %}{% for j in range(10**6) %}{% endfor %}{% endfor %}",
        Slot.TEXT,
        LimitExceeded,
        "",
    ),
    (
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(40) }}",
        Slot.TEXT,
        LimitExceeded,
        "",
    ),
    # --- recursion -------------------------------------------------------------------------------
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", Slot.TEXT, LimitExceeded, "stack"),
    ("$ load_json('[' * 100000 + ']' * 100000)", Slot.VALUE, LimitExceeded, ""),
    ("$ str(load_json('[' * 900 + ']' * 900))", Slot.VALUE, LimitExceeded, "nested deeper"),
    # --- regex -----------------------------------------------------------------------------------
    ("$ re.match(r'(x+x+)+y', 'x' * 5000)", Slot.VALUE, LimitExceeded, "regex took longer"),
    ("$ match_regex(r'(a|aa)+$', 'a' * 5000 + 'b')", Slot.VALUE, LimitExceeded, "regex took longer"),
    ("$ re.findall('a' * 20000, 'a')", Slot.VALUE, LimitExceeded, "pattern"),
    # --- JSON / YAML bombs -----------------------------------------------------------------------
    ("$ load_json('9' * 100000)", Slot.VALUE, EvaluationError, "invalid JSON"),
    ("$ load_json('[' + '1,' * 10**6 + '1]')", Slot.VALUE, LimitExceeded, ""),
    ("$ load_yaml('!!python/object/apply:os.system [\"true\"]')", Slot.VALUE, EvaluationError, "YAML"),
    ("$ yaml.load('!!python/name:os.system')", Slot.VALUE, EvaluationError, "YAML"),
    (
        "$ load_yaml('a: &a [x,x,x,x,x,x,x,x,x]\\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\\n"
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\\n"
        "g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\\nh: [*g,*g,*g,*g,*g,*g,*g,*g,*g]')",
        Slot.VALUE,
        LimitExceeded,
        "",
    ),
    (
        "$ dump_json(load_yaml('a: &a [x,x,x,x,x,x,x,x,x]\\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\\n"
        "c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\\n"
        "e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\\n"
        "g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]').g)",
        Slot.VALUE,
        LimitExceeded,
        "",
    ),
    # --- samples and helpers ---------------------------------------------------------------------
    ("$ random.sample(range(10**6), 3)", Slot.VALUE, LimitExceeded, "population"),
    ("$ markdown_to_html('*' * 10**6)", Slot.VALUE, LimitExceeded, "markdown_to_html"),
    ("$ csv.reader('a', dialect='nope')", Slot.VALUE, EvaluationError, ""),
    ("$ sum([[0] * 1000] * 1000, [])", Slot.VALUE, EvaluationError, "adds numbers"),
]


def test_catalogue_is_large_enough() -> None:
    assert len(CATALOGUE) >= 40


@pytest.mark.parametrize(
    ("source", "slot", "error", "fragment"), CATALOGUE, ids=[c[0][:60] for c in CATALOGUE]
)
def test_attempt_is_rejected(source: str, slot: Slot, error: type[DslError], fragment: str) -> None:
    start = time.thread_time()
    with pytest.raises(DslError) as info:
        readable = read_string(source, slot, TASK_SCOPE_NAMES)
        evaluate_value(readable, SCOPE)
    spent = time.thread_time() - start
    assert isinstance(info.value, error), f"{type(info.value).__name__}: {info.value}"
    assert fragment in str(info.value)
    assert str(info.value)  # a message, not a bare exception
    assert spent < 0.9, f"took {spent:.2f} s of CPU"
