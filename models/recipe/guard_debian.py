#!/usr/bin/env python3
"""A never-trained general-domain guard set for sieve-ce v2: Debian package descriptions.

Why: every held-out slice lj_train.py selects on comes from a training domain (SciFact, NFCorpus,
WordNet), so none of them can say whether a checkpoint lost the bi-encoder's general knowledge:
the held-out WordNet slice was +0.042 over init while DL19 (which we never use for choices) was
-0.013. This set is a different domain that no recipe step trains on, built only from what apt
already fetches, so checkpoints, interpolations and blends can be checked out of domain without
touching a test split.

Query = a package's one-line synopsis ("command line tool for transferring data with URL syntax"),
its one relevant document = the package's long description. To keep the judgments complete
enough: one package per source package (no -dev/-doc twins), synopses and descriptions that occur
once only, descriptions of at least 25 words. Written in BEIR layout (corpus.parquet with
id/title/text, queries.jsonl, qrels/test.tsv) for `sieve eval --dataset`.

Needs the English long descriptions, which apt does not fetch by default:
    apt-get update -o Acquire::Languages=en
Licence: the descriptions are part of Debian main, whose packages are all DFSG-free; this set is
used for evaluation only and is not shipped.
"""
import argparse, collections, glob, json, os, random, re, subprocess

import pyarrow as pa
import pyarrow.parquet as pq

HERE = os.path.dirname(os.path.abspath(__file__))


def read_apt(pattern):
    """Text of the release's apt list files matching the pattern (lz4/xz/gz via apt-helper).

    Only the release itself (e.g. bookworm), not its -security/-updates suites, which change
    every week: the set stays the same between machines and months."""
    out = []
    for path in sorted(glob.glob(os.path.join('/var/lib/apt/lists', pattern))):
        if '-security_' in path or '-updates_' in path:
            continue
        out.append(subprocess.run(['/usr/lib/apt/apt-helper', 'cat-file', path], capture_output=True, text=True, check=True).stdout)
    return '\n\n'.join(out)


def stanzas(text):
    for block in text.split('\n\n'):
        fields, cur, cont = {}, None, collections.defaultdict(list)
        for line in block.split('\n'):
            if line.startswith(' ') and cur:
                cont[cur].append(line[1:])
                continue
            m = re.match(r'^([A-Za-z0-9-]+): ?(.*)$', line)
            if m:
                cur = m.group(1)
                fields[cur] = m.group(2)
        if fields:
            yield fields, cont


def eligible_packages():
    """[(package, source, synopsis, description)] that can be judged alone: one package per source
    package (no -dev/-doc twins), synopsis and description occurring once, ≥ 25 words of
    description and ≥ 3 of synopsis; sorted by source package (callers shuffle with a seed)."""
    source = {}
    for f, _ in stanzas(read_apt('*_main_binary-*_Packages*')):
        if 'Package' in f:
            source[f['Package']] = f.get('Source', f['Package']).split()[0]
    translations = read_apt('*_main_i18n_Translation-en*')
    if not translations:
        raise SystemExit('no English descriptions in /var/lib/apt/lists: run `apt-get update -o Acquire::Languages=en`')
    packages, seen = [], set()
    for f, cont in stanzas(translations):
        if 'Package' not in f or 'Description-en' not in f or f['Package'] in seen:
            continue  # a package in several list files counts once
        seen.add(f['Package'])
        text = ' '.join('' if l.strip() == '.' else l.strip() for l in cont['Description-en'])
        packages.append((f['Package'], source.get(f['Package'], f['Package']), f['Description-en'].strip(),
                         re.sub(r'\s+', ' ', text).strip()))
    synopsis_n = collections.Counter(p[2].lower() for p in packages)
    text_n = collections.Counter(p[3] for p in packages)
    by_source = collections.defaultdict(list)
    for p in packages:
        if len(p[3].split()) >= 25 and len(p[2].split()) >= 3 and synopsis_n[p[2].lower()] == 1 and text_n[p[3]] == 1:
            by_source[p[1]].append(p)
    return [sorted(ps, key=lambda p: (p[0] != src, p[0]))[0] for src, ps in sorted(by_source.items())]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=os.path.join(HERE, 'work', 'guard', 'debian'))
    ap.add_argument('--docs', type=int, default=8000)
    ap.add_argument('--queries', type=int, default=400)
    ap.add_argument('--seed', type=int, default=7)
    args = ap.parse_args()

    chosen = eligible_packages()
    n_eligible = len(chosen)
    random.Random(args.seed).shuffle(chosen)
    corpus, queries = chosen[: args.docs], chosen[: args.queries]

    os.makedirs(os.path.join(args.out, 'qrels'), exist_ok=True)
    pq.write_table(pa.table({'id': [p[0] for p in corpus], 'title': [''] * len(corpus), 'text': [p[3] for p in corpus]}),
                   os.path.join(args.out, 'corpus.parquet'))
    with open(os.path.join(args.out, 'queries.jsonl'), 'w') as f:
        for i, p in enumerate(queries):
            f.write(json.dumps({'_id': f'q{i}', 'text': p[2]}) + '\n')
    with open(os.path.join(args.out, 'qrels', 'test.tsv'), 'w') as f:
        f.write('query-id\tcorpus-id\tscore\n')
        for i, p in enumerate(queries):
            f.write(f'q{i}\t{p[0]}\t1\n')
    print(json.dumps({'out': args.out, 'eligible': n_eligible, 'documents': len(corpus), 'queries': len(queries)}))


if __name__ == '__main__':
    main()
