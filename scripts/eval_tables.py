#!/usr/bin/env python3
"""Renders `sieve eval` JSON reports as the README's rerank tables (Markdown).

Usage: scripts/eval_tables.py REPORT.json[=TITLE] ... [--readme README.md]

Each report becomes a title line with the command that produced it (paths of caches and outputs
left out), and one table: every stage with nDCG@10, MRR@10, its gain over the candidates it
reranked (with its 95% paired-bootstrap interval), the share of the full-depth gain it keeps, mean ms/query end to end and for the rerank
alone, the speed-up over the full-depth rerank, and a ◆ on the quality/cost Pareto front — all
read from the report's `comparison` (computed by sieve eval), nothing recomputed here.
With --readme, the tables replace what is between <!-- RERANK-TABLES --> and
<!-- /RERANK-TABLES --> in that file; otherwise they are printed.
"""
import json
import os
import shlex
import sys

DROP_WITH_VALUE = {'--index-dir', '--json', '--run-dir'}


def clean_command(command):
    words = shlex.split(command)
    out = ['sieve']
    skip = False
    for w in words[1:]:
        if skip:
            skip = False
            continue
        if w in DROP_WITH_VALUE:
            skip = True
            continue
        out.append(shlex.quote(w))
    return ' '.join(out)


def short(stage):
    """`run DIR/FILE.trec` -> `run FILE.trec` (the command line names the full path)."""
    return 'run ' + stage[4:].rsplit('/', 1)[-1] if stage.startswith('run ') else stage


def fmt(value, spec, missing='—'):
    return missing if value is None else format(value, spec)


def gain(row):
    if row.get('gain') is None:
        return '—'
    text = f"{row['gain']:+.4f}"
    if row.get('gain_ci'):
        lo, hi = row['gain_ci']
        text += f' [{lo:+.3f}, {hi:+.3f}]'
    return text


def share(kept):
    if kept is None:
        return '—'
    return '< −999%' if kept < -9.99 else f'{kept * 100:.0f}%'


def load_report(path):
    """The report at `path`, or exit with a message naming the file and what is wrong with it."""
    try:
        with open(path) as f:
            report = json.load(f)
    except OSError as e:
        sys.exit(f'eval_tables: cannot read {path}: {e.strerror}')
    except json.JSONDecodeError as e:
        sys.exit(f'eval_tables: {path} is not JSON ({e.msg} at line {e.lineno}); expected a `sieve eval --json` report')
    missing = [k for k in ('queries', 'machine', 'command', 'stages') if not isinstance(report, dict) or k not in report]
    if missing:
        sys.exit(f"eval_tables: {path} is not a `sieve eval --json` report (no {', '.join(missing)})")
    return report


def table(path, title):
    report = load_report(path)
    rows = {r['stage']: r for r in report.get('comparison', [])}
    candidates = short(report.get('candidates') or 'first stage')
    lines = [
        f"**{title}** ({report['queries']} queries, {report['machine']}): "
        f"`{clean_command(report['command'])}`",
        '',
        f'| stage | nDCG@10 | MRR@10 | Δ vs {candidates} [95% CI] | gain kept | ms/query | rerank ms | '
        'speed-up | front |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    front = []
    for stage in report['stages']:
        name, metrics = stage['stage'], stage['metrics']
        row = rows.get(name, {})
        rerank = stage.get('rerank_latency')
        lines.append(
            f"| {short(name)} | {metrics.get('ndcg@10', 0):.4f} | {metrics.get('mrr@10', 0):.4f} | "
            f"{gain(row)} | {share(row.get('gain_kept'))} | "
            f"{stage['latency']['mean_ms']:.1f} | {fmt(rerank and rerank['mean_ms'], '.0f')} | "
            f"{fmt(row.get('speedup'), '.2f')}{'×' if row.get('speedup') else ''} | "
            f"{'◆' if row.get('pareto') else ''} |")
        if row.get('pareto'):
            front.append((stage['latency']['mean_ms'], short(name), metrics.get('ndcg@10', 0)))
    front.sort()
    lines += ['', 'Pareto front (cheapest first): ' +
              ' → '.join(f'{n} ({q:.4f}, {ms:.0f} ms)' for ms, n, q in front), '']
    return '\n'.join(lines)


def main(argv):
    if '-h' in argv or '--help' in argv:
        print(__doc__)
        return
    readme = None
    if '--readme' in argv:
        i = argv.index('--readme')
        if i + 1 >= len(argv):
            sys.exit('eval_tables: --readme needs a file')
        readme = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    if not argv:
        sys.exit(__doc__)
    parts = []
    for arg in argv:
        path, _, title = arg.partition('=')
        parts.append(table(path, title or path))
    text = '\n'.join(parts)
    if readme is None:
        print(text)
        return
    try:
        with open(readme) as f:
            content = f.read()
    except OSError as e:
        sys.exit(f'eval_tables: cannot read {readme}: {e.strerror}')
    start, end = '<!-- RERANK-TABLES -->', '<!-- /RERANK-TABLES -->'
    if start not in content or end not in content:
        sys.exit(f'{readme}: no {start} ... {end} markers')
    a, b = content.index(start), content.index(end)
    with open(readme + '.tmp', 'w') as f:
        f.write(content[:a] + start + '\n' + text + content[b:])
    os.replace(readme + '.tmp', readme)
    print(f'{readme}: {len(parts)} tables written')


if __name__ == '__main__':
    main(sys.argv[1:])
