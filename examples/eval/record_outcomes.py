#!/usr/bin/env python3
"""Turns `frugal batch` runs into an outcomes file for `frugal eval` (docs/eval.md).

Run the same prompts once per model, each with a one-tier policy ({"tiers": ["MODEL"]}), and
keep each run's answers: its `--jsonl` output, or its `--ledger` (the answers table). This
script grades every answer against the prompt's expected answer and writes frugal's JSONL
outcomes, with the tokens each call was billed for.

  record_outcomes.py --prompts PROMPTS.jsonl [--extract REGEX] --run MODEL RUN [--run MODEL RUN ...]
      > outcomes.jsonl

- PROMPTS.jsonl: the batch's prompts, each `{"id", "prompt", "expected"}`.
- MODEL RUN: the model the run asked (its policy's tier, the name a policy will use), and the
  batch's `--jsonl` output (*.jsonl) or its ledger (*.db). The model that served may have
  another name (a dated id); the answer is recorded under the one asked.
- An answer is correct when REGEX's first group (searched in the answer) equals `expected`,
  commas and surrounding spaces aside; without --extract, when the whole answer does.
"""
import argparse
import json
import re
import sqlite3
import sys


def answers_of(path):
    if path.endswith('.db'):
        db = sqlite3.connect(path)
        for (text,) in db.execute('SELECT answer FROM answers'):
            yield json.loads(text)['answer']
        return
    with open(path, encoding='utf-8') as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def normal(s):
    return s.replace(',', '').strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--prompts', required=True)
    ap.add_argument('--extract')
    ap.add_argument('--run', nargs=2, action='append', required=True, metavar=('MODEL', 'RUN'))
    args = ap.parse_args()
    extract = re.compile(args.extract) if args.extract else None

    prompts = {}
    order = []
    with open(args.prompts, encoding='utf-8') as f:
        for line in f:
            if line.strip():
                p = json.loads(line)
                prompts[p['id']] = p
                order.append(p['id'])

    answers = {pid: {} for pid in order}
    for model, run in args.run:
        for a in answers_of(run):
            if a.get('error') or a.get('content') is None or a.get('id') not in prompts:
                continue  # a failed call records no outcome
            attempt = a['attempts'][-1]
            got = a['content']
            if extract:
                m = extract.search(got)
                got = m.group(1) if m else None
            correct = got is not None and normal(got) == normal(str(prompts[a['id']]['expected']))
            answers[a['id']][model] = {
                'content': a['content'],
                'correct': correct,
                'prompt_tokens': attempt['prompt_tokens'],
                'completion_tokens': attempt['completion_tokens'],
                'finish_reason': a.get('finish_reason') or 'stop',
            }
    for pid in order:
        if answers[pid]:
            print(json.dumps({'prompt': prompts[pid]['prompt'], 'answers': answers[pid]}, ensure_ascii=False))


if __name__ == '__main__':
    sys.exit(main())
