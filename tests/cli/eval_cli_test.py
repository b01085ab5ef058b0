#!/usr/bin/env python3
"""`frugal eval` as a user runs it, and its promise that the live path agrees with it.

- The vendored GSM8K outcomes through a final-answer policy: the figures `--json` prints, the
  same with prices from a saved catalog or from the endpoint.
- `frugal batch` through `frugal sim --outcomes` (the recorded answers replayed): the same
  escalations and the same cost, to the last digit, as the eval, and the simulator's bill too.
- `--sweep` and `--html`; RouteLLM's MMLU files (correctness only): baselines alone, said so.
- Errors: a tier that is not one of the file's models lists them; a malformed file names its
  line; a bad sweep.

Usage: eval_cli_test.py FRUGAL
"""
import csv
import json
import os
import subprocess
import sys
import tempfile

FRUGAL = sys.argv[1]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
DATA = os.path.join(ROOT, 'data', 'routellm')
GSM8K = os.path.join(DATA, 'gsm8k_responses.csv')
CATALOG = os.path.join(DATA, 'models.json')
CHEAP = 'mistralai/Mixtral-8x7B-Instruct-v0.1'
FLAGSHIP = 'gpt-4-1106-preview'

failures = 0


def check(name, ok, detail=''):
    global failures
    print(('ok   ' if ok else 'FAIL ') + name + ('' if ok else '\n  ' + str(detail)))
    if not ok:
        failures += 1


def frugal(*args, env=None):
    return subprocess.run([FRUGAL, *args], capture_output=True, text=True, env=env, timeout=300)


def main():
    tmp = tempfile.mkdtemp()
    policy = os.path.join(tmp, 'policy.json')
    with open(policy, 'w') as f:
        json.dump({'cheap': CHEAP, 'flagship': FLAGSHIP, 'max_tokens': 1024,
                   'must_match': r'(^|\n)#### -?[\d,]*\d\s*$'}, f)

    # The eval, prices from the saved catalog.
    r = frugal('eval', '--outcomes', GSM8K, '--policy', policy, '--prices', CATALOG, '--json')
    check('eval --json exits 0', r.returncode == 0, r.stderr)
    ev = json.loads(r.stdout)
    rows = list(csv.DictReader(open(GSM8K, encoding='utf-8', newline='')))
    n = len(rows)
    check('every prompt is counted', ev['prompts'] == n == 1319, ev['prompts'])
    base = ev['baselines']
    cheap_rate = sum(x[CHEAP] == 'True' for x in rows) / n
    flag_rate = sum(x[FLAGSHIP] == 'True' for x in rows) / n
    either = sum(x[CHEAP] == 'True' or x[FLAGSHIP] == 'True' for x in rows) / n
    check('always-cheap is the file\'s own rate', abs(base['always_cheap']['accuracy'] - cheap_rate) < 1e-6)
    check('always-flagship is the file\'s own rate', abs(base['always_flagship']['accuracy'] - flag_rate) < 1e-6)
    check('the oracle is the share either gets right', abs(base['oracle']['accuracy'] - either) < 1e-6)
    pol = ev['policy']
    check('the shape: accuracy, cost, escalated_share, pgr, by_tier, sent_to',
          sorted(pol) == ['accuracy', 'by_tier', 'cost', 'escalated_share', 'pgr', 'sent_to'], sorted(pol))
    check('every prompt is sent to the cheap tier', pol['sent_to'][CHEAP] == 1, pol['sent_to'])
    check('costs are decimal strings', isinstance(pol['cost'], str) and float(pol['cost']) > 0, pol['cost'])
    check('PGR is the share of the gap recovered',
          abs(pol['pgr'] - (pol['accuracy'] - cheap_rate) / (flag_rate - cheap_rate)) < 1e-5, pol)
    check('random escalates as many as the policy',
          abs(base['random']['escalated_share'] - pol['escalated_share']) < 1e-6)

    # The live path: frugal batch through the simulator replaying the same answers.
    sim = subprocess.Popen([FRUGAL, 'sim', '--port', '0', '--config', os.path.join(DATA, 'sim.json'),
                            '--outcomes', GSM8K], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = sim.stdout.readline().strip().replace('listening on ', '')
        check('the replaying simulator listens', url.startswith('http://127.0.0.1:'), url)
        env = dict(os.environ, OPENROUTER_API_KEY='sk-or-v1-eval-test-secret-0123456789')
        env.pop('OPENROUTER_BASE_URL', None)
        r2 = frugal('eval', '--outcomes', GSM8K, '--policy', policy, '--base-url', url, '--json', env=env)
        check('prices from the endpoint give the same figures',
              r2.returncode == 0 and json.loads(r2.stdout) == ev, r2.stderr)
        prompts = os.path.join(tmp, 'prompts.jsonl')
        with open(prompts, 'w') as f:
            for i, x in enumerate(rows):
                f.write(json.dumps({'id': str(i), 'prompt': x['prompt']}) + '\n')
        ledger = os.path.join(tmp, 'ledger.db')
        b = frugal('batch', '--base-url', url, '--policy', policy, '--budget', '5', '--ledger', ledger,
                   '--jsonl', '--concurrency', '8', prompts, env=env)
        check('batch exits 0', b.returncode == 0, b.stderr[-500:])
        lines = [json.loads(l) for l in b.stdout.splitlines() if l.strip()]
        escalated = sum(1 for l in lines if l['escalated'])
        check('batch escalated as many prompts as the eval',
              escalated == round(pol['escalated_share'] * n), (escalated, pol['escalated_share'] * n))
        # Prompt by prompt: the same escalations, the same tier, the same cost.
        decisions = os.path.join(tmp, 'decisions.jsonl')
        d = frugal('eval', '--outcomes', GSM8K, '--policy', policy, '--prices', CATALOG,
                   '--decisions', decisions)
        check('eval --decisions exits 0', d.returncode == 0, d.stderr)
        eval_by = {x['index']: x for x in map(json.loads, open(decisions))}
        live_by = {int(l['id']): l for l in lines}
        differ = [i for i in range(n) if i not in live_by or i not in eval_by or
                  live_by[i]['escalated'] != eval_by[i]['escalated'] or
                  live_by[i]['final_model'] != eval_by[i]['model'] or
                  live_by[i]['cost'] != eval_by[i]['cost'] or
                  (live_by[i]['reason'] or None) != eval_by[i]['reason']]
        check('each prompt escalated, answered and cost as the eval said', not differ,
              [(live_by.get(i), eval_by.get(i)) for i in differ[:2]])
        check('every escalation is must_match',
              all(l['reason'] == 'must_match' for l in lines if l['escalated']))
        rep = json.loads(frugal('report', '--ledger', ledger, '--json').stdout)
        check('the ledger\'s total is the eval\'s cost', rep['total_cost'] == pol['cost'],
              (rep['total_cost'], pol['cost']))
        by_model = {m['model']: m['requests'] for m in rep['by_model']}
        check('the cheap tier answered every prompt first', by_model.get(CHEAP) == n, by_model)
        # The simulator's own bill.
        import urllib.request
        bill = json.load(urllib.request.urlopen(url.replace('/api/v1', '/__sim/bill'), timeout=10))
        check('the simulator billed the eval\'s cost', bill['total']['cost_usd'] == pol['cost'],
              (bill['total']['cost_usd'], pol['cost']))
    finally:
        sim.terminate()
        sim.wait(10)

    # Recording one's own outcomes (docs/eval.md): one-tier batch runs through a simulator
    # replaying a hand-made file, graded by examples/eval/record_outcomes.py, give the file back:
    # the same answers, verdicts and billed tokens, so the same eval.
    cheap, flag = 'google/gemma-4-31b-it:free', 'anthropic/claude-fable-5'
    original = [
        {'prompt': 'What is 2+3?', 'expected': '5',
         'answers': {cheap: {'content': '2+3 is 5.\n#### 5', 'correct': True, 'prompt_tokens': 9,
                             'completion_tokens': 5},
                     flag: {'content': '#### 5', 'correct': True, 'prompt_tokens': 9, 'completion_tokens': 2}}},
        {'prompt': 'What is 7*6? Write the final line as #### N.', 'expected': '42',
         'answers': {cheap: {'content': 'I think 48.\n#### 48', 'correct': False},
                     flag: {'content': '7*6 = 42\n#### 42', 'correct': True}}},
        {'prompt': 'How many days has a leap year?', 'expected': '366',
         'answers': {cheap: {'content': 'A leap year has 366 days, \u00e9t\u00e9 included.', 'correct': False},
                     flag: {'content': 'It has 366 days.\n#### 366', 'correct': True}}},
    ]
    own = os.path.join(tmp, 'own.jsonl')
    with open(own, 'w') as f:
        for o in original:
            f.write(json.dumps({'prompt': o['prompt'], 'answers': o['answers']}) + '\n')
    own_prompts = os.path.join(tmp, 'own_prompts.jsonl')
    with open(own_prompts, 'w') as f:
        for i, o in enumerate(original):
            f.write(json.dumps({'id': f'q{i}', 'prompt': o['prompt'], 'expected': o['expected']}) + '\n')
    sim2 = subprocess.Popen([FRUGAL, 'sim', '--port', '0', '--outcomes', own],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url2 = sim2.stdout.readline().strip().replace('listening on ', '')
        runs = []
        for model, extra in ((cheap, []), (flag, ['--budget', '1', '--ledger', os.path.join(tmp, 'own.db')])):
            one = os.path.join(tmp, 'one.json')
            with open(one, 'w') as f:
                json.dump({'tiers': [model]}, f)
            out = os.path.join(tmp, f'run{len(runs)}.jsonl')
            b = frugal('batch', '--base-url', url2, '--policy', one, '--jsonl', '--output', out,
                       *extra, own_prompts, env=env)
            check(f'a one-tier batch of {model} exits 0', b.returncode == 0, b.stderr[-400:])
            runs.append(out if not extra else os.path.join(tmp, 'own.db'))  # the ledger, for one
        rec = subprocess.run([sys.executable, os.path.join(ROOT, 'examples', 'eval', 'record_outcomes.py'),
                              '--prompts', own_prompts, '--extract', r'#### (.+)$',
                              '--run', cheap, runs[0], '--run', flag, runs[1]],
                             capture_output=True, text=True)
        check('record_outcomes.py exits 0', rec.returncode == 0, rec.stderr)
        recorded = [json.loads(l) for l in rec.stdout.splitlines() if l.strip()]
        check('every prompt is recorded', len(recorded) == len(original), rec.stdout)
        same = True
        for o, r in zip(original, recorded):
            for m in (cheap, flag):
                want, got = o['answers'][m], r['answers'].get(m, {})
                est = lambda t: (len(t.encode()) + 3) // 4
                if (got.get('content') != want['content'] or got.get('correct') != want['correct'] or
                        got.get('prompt_tokens') != want.get('prompt_tokens', est(o['prompt'])) or
                        got.get('completion_tokens') != want.get('completion_tokens', est(want['content']))):
                    same = False
                    print('  recorded', m, got, '\n  original', want)
        check('the recording gives back the answers, verdicts and tokens replayed', same)
        rec_file = os.path.join(tmp, 'recorded.jsonl')
        with open(rec_file, 'w') as f:
            f.write(rec.stdout)
        two = os.path.join(tmp, 'two.json')
        with open(two, 'w') as f:
            json.dump({'cheap': cheap, 'flagship': flag, 'must_match': '#### \\d+$'}, f)
        e1 = frugal('eval', '--outcomes', own, '--policy', two, '--base-url', url2, '--json', env=env)
        e2 = frugal('eval', '--outcomes', rec_file, '--policy', two, '--base-url', url2, '--json', env=env)
        check('the recorded file evaluates as the original', e1.returncode == 0 and e1.stdout == e2.stdout,
              e1.stderr + e2.stderr)
    finally:
        sim2.terminate()
        sim2.wait(10)

    # --sweep and --html.
    html = os.path.join(tmp, 'eval.html')
    s = frugal('eval', '--outcomes', GSM8K, '--policy', policy, '--prices', CATALOG,
               '--sweep', 'must_match=["####","(^|\\\\n)#### -?[\\\\d,]*\\\\d\\\\s*$"]', '--json')
    check('a sweep of two patterns exits 0', s.returncode == 0, s.stderr)
    sw = json.loads(s.stdout)['sweep']
    check('the sweep names its member', sw['member'] == 'must_match')
    check('one point per value', len(sw['points']) == 2, sw)
    check('the stricter pattern escalates more',
          sw['points'][1]['escalated_share'] > sw['points'][0]['escalated_share'], sw)
    check('the sweep\'s point equals the single run', sw['points'][1]['cost'] == pol['cost'])
    h = frugal('eval', '--outcomes', GSM8K, '--policy', policy, '--prices', CATALOG,
               '--sweep', 'max_tokens=64,256,1024', '--html', html)
    check('--html with a sweep exits 0', h.returncode == 0, h.stderr)
    page = open(html).read() if os.path.exists(html) else ''
    check('the page has the curve as inline SVG', '<svg' in page and '<path' in page and 'oracle' in page)
    check('a text table is printed beside it', 'max_tokens=256' in h.stdout and 'oracle' in h.stdout, h.stdout)

    # The rules shipped as examples: the goal of docs/eval.md, at least half the gap recovered
    # with at most a quarter of the prompts escalated, holds for the best one; each beats
    # random escalation at its own share.
    shipped = {}
    for name in ('final-answer', 'final-whole-number', 'final-no-hedge'):
        x = frugal('eval', '--outcomes', GSM8K, '--policy', os.path.join(ROOT, 'examples', 'eval', name + '.json'),
                   '--prices', CATALOG, '--json')
        check(f'the shipped rule {name} evaluates', x.returncode == 0, x.stderr)
        shipped[name] = json.loads(x.stdout) if x.returncode == 0 else None
        if shipped[name]:
            check(f'{name} beats random escalation at its share',
                  shipped[name]['policy']['accuracy'] > shipped[name]['baselines']['random']['accuracy'])
    best = shipped.get('final-no-hedge')
    if best:
        # Pinned apart from frugal: a Python replay of the same file, token rule, prices and
        # SplitMix64 shuffle (seed 1) gives these to the digit.
        check('final-no-hedge costs $1.38010368', best['policy']['cost'] == '1.38010368', best['policy'])
        check('its random baseline is pinned', best['baselines']['random']['cost'] == '1.07778368' and
              abs(best['baselines']['random']['accuracy'] - 0.679303) < 1e-6, best['baselines']['random'])
        check('final-no-hedge recovers at least half the gap', best['policy']['pgr'] >= 0.5, best['policy'])
        check('with at most 25% escalated', best['policy']['escalated_share'] <= 0.25, best['policy'])

    # MMLU: correctness only.
    mmlu = sorted(os.path.join(DATA, 'mmlu', f) for f in os.listdir(os.path.join(DATA, 'mmlu')))
    args = ['eval', '--policy', policy, '--prices', CATALOG, '--json']
    for f in mmlu:
        args += ['--outcomes', f]
    m = frugal(*args)
    check('the MMLU files evaluate', m.returncode == 0, m.stderr)
    mj = json.loads(m.stdout) if m.returncode == 0 else {}
    check('no policy figures without answers', mj.get('policy', 0) is None, mj.get('policy'))
    check('and it says so', any('cannot be judged' in x for x in mj.get('notes', [])), mj.get('notes'))
    check('every MMLU prompt is counted', mj.get('prompts', 0) > 10000, mj.get('prompts'))

    # Errors.
    bad_policy = os.path.join(tmp, 'bad.json')
    with open(bad_policy, 'w') as f:
        json.dump({'cheap': CHEAP, 'flagship': 'openai/gpt-5'}, f)
    e = frugal('eval', '--outcomes', GSM8K, '--policy', bad_policy, '--prices', CATALOG)
    check('an unknown tier fails', e.returncode != 0)
    check('and lists the file\'s models', 'openai/gpt-5' in e.stderr and FLAGSHIP in e.stderr, e.stderr)
    broken = os.path.join(tmp, 'broken.jsonl')
    with open(broken, 'w') as f:
        f.write('{"prompt":"q","answers":{"a":{"correct":true}}}\n{"prompt":"r"}\n')
    e = frugal('eval', '--outcomes', broken, '--policy', policy, '--prices', CATALOG)
    check('a malformed file names its line', e.returncode == 1 and 'line 2' in e.stderr, e.stderr)
    e = frugal('eval', '--outcomes', GSM8K, '--policy', policy, '--prices', CATALOG, '--sweep', 'min_chars')
    check('a sweep without values is a usage error', e.returncode == 2 and 'NAME=' in e.stderr, e.stderr)
    e = frugal('eval', '--outcomes', GSM8K, '--policy', policy, '--prices', CATALOG, '--sweep', 'must_match=(')
    check('a sweep value the policy refuses names it', e.returncode == 2 and 'must_match=(' in e.stderr, e.stderr)
    e = frugal('eval', '--policy', policy, '--prices', CATALOG)
    check('--outcomes is required', e.returncode == 2 and '--outcomes' in e.stderr, e.stderr)

    if failures:
        print(f'{failures} check(s) failed')
        sys.exit(1)


main()
