#!/usr/bin/env python3
"""The layer rules of DESIGN.md, checked over the includes (run by `make test`).

- A lower layer never includes a higher one (src/<layer>/ and the public headers, each of
  which belongs to a layer).
- The CLI presents: it includes public headers (<frugal/...>) and its own files only.
- The cascade uses the client's public API only: no private header of openrouter/ or http/.
- The budget's book is sans-io: nothing it includes, however indirectly, is Asio or Beast.

Usage: layers_test.py [ROOT]   (exit 1 naming every include that breaks a rule)
"""
import os
import re
import sys

ROOT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..'))

# Lowest first; a file may include its own layer and any lower one.
RANK = {
    'base': 0, 'money': 0, 'sse': 0, 'json': 0,
    'http': 1,
    'openrouter': 2,
    'budget': 3,
    'cascade': 4,
    'ledger': 5,
    'eval': 6, 'sim': 6,
    'serve': 7,
    'cli': 8,
}

# The layer each public header belongs to.
PUBLIC = {
    'error.hpp': 'base', 'diagnostics.hpp': 'base', 'money.hpp': 'money',
    'sse_parser.hpp': 'sse', 'types.hpp': 'openrouter', 'chat_client.hpp': 'openrouter',
    'prices.hpp': 'budget', 'budget.hpp': 'budget', 'budget_types.hpp': 'budget', 'budget_store.hpp': 'budget',
    'ledger_notes.hpp': 'budget',
    'router.hpp': 'cascade', 'ledger.hpp': 'ledger', 'eval.hpp': 'eval', 'serve.hpp': 'serve',
    'sim.hpp': 'sim',
}

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]', re.M)


def layer_of(path):
    rel = os.path.relpath(path, ROOT)
    parts = rel.split(os.sep)
    if parts[0] == 'include':
        return PUBLIC.get(parts[-1])
    if parts[0] == 'src' and len(parts) > 2:
        return parts[1]
    return None  # src/boost_impl.cpp and the like: outside the layers


def resolve(kind, name):
    """The project file an include names, or None for a system header."""
    if kind == '<' and name.startswith('frugal/'):
        return os.path.join(ROOT, 'include', name)
    if kind == '"':
        p = os.path.join(ROOT, 'src', name)
        return p if os.path.exists(p) else None
    return None


def includes(path):
    with open(path, encoding='utf-8') as f:
        return INCLUDE.findall(f.read())


def closure(path, seen=None):
    """Every system header reached from `path` through project headers."""
    seen = set() if seen is None else seen
    out = set()
    for kind, name in includes(path):
        target = resolve(kind, name)
        if target is None:
            out.add(name)
        elif target not in seen and os.path.exists(target):
            seen.add(target)
            out |= closure(target, seen)
    return out


def main():
    problems = []
    files = []
    for top in ('include/frugal', 'src'):
        for d, _, names in os.walk(os.path.join(ROOT, top)):
            files += [os.path.join(d, n) for n in names if n.endswith(('.hpp', '.cpp'))]
    unknown = [f for f in files if f.startswith(os.path.join(ROOT, 'include')) and layer_of(f) is None]
    for f in unknown:
        problems.append(f'{os.path.relpath(f, ROOT)}: a public header with no layer (add it to PUBLIC)')
    for f in sorted(files):
        mine = layer_of(f)
        if mine is None or mine not in RANK:
            continue
        rel = os.path.relpath(f, ROOT)
        for kind, name in includes(f):
            target = resolve(kind, name)
            if target is None:
                continue
            theirs = layer_of(target)
            if theirs is None:
                continue
            if RANK.get(theirs, 99) > RANK[mine]:
                problems.append(f'{rel}: includes {name} ({theirs}), a layer above {mine}')
            if mine == 'cli' and kind == '"' and not name.startswith('cli/'):
                problems.append(f'{rel}: the CLI includes the private {name}; use a public header')
            if mine == 'cascade' and kind == '"' and name.split('/')[0] in ('openrouter', 'http'):
                problems.append(f'{rel}: the cascade includes the private {name}; use chat_client.hpp')
    for book in ('src/budget/book.hpp', 'src/budget/book.cpp'):
        path = os.path.join(ROOT, book)
        if os.path.exists(path):
            for name in sorted(closure(path)):
                if name.startswith(('boost/asio', 'boost/beast')):
                    problems.append(f'{book}: reaches {name}; the book is sans-io')
    for p in problems:
        print('FAIL', p)
    print(f'{len(files)} files checked, {len(problems)} broken rule(s)')
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
