#!/usr/bin/env python3
"""General-domain training groups for sieve-ce v2, made from WordNet 3.0 (Debian's `wordnet-base`,
`/usr/share/wordnet`; WordNet 3.0 licence: use, copy and modify for any purpose with its notice).

SciFact and NFCorpus are both biomedical: a model trained on them alone learns what helps there and
gives some of it back elsewhere (DL19, web questions). These groups are everyday English, in two
forms that a web search sees, so the training has a second domain to stay good on and a held-out
slice of it that checkpoint selection must not lose on:

- **definition**: `what is a bank` / `bank definition` / `define kick` … → the entry of the lemma's
  most frequent sense (`bank: sloping land (especially the slope beside a body of water)`);
  negatives: the bi-encoder's nearest other entries that do not contain the lemma (so no other
  sense of it, which would be unjudged rather than wrong).
- **sense**: an example sentence of a synset (`they pulled the canoe up on the bank`) → that
  synset's entry (examples left out of every entry); negatives: the other senses of the same
  lemma first (word-sense disambiguation: all of them match the word), then the bi-encoder's
  nearest entries.

Entries are `word, synonym, …: definition`. Writes work/data/general.jsonl.gz (same record shape
as train.jsonl.gz, set "wordnet") and work/data/general_docs.jsonl.gz. No query, document or
judgement of any evaluation set is used.
"""
import argparse, collections, gzip, json, os, random, re, sys, time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)

POS = {'n': 'noun', 'v': 'verb', 'a': 'adj', 's': 'adj'}
TEMPLATES = {
    'n': ['what is a {w}', 'what is {w}', '{w} definition', 'define {w}', 'meaning of {w}', '{w} meaning',
          'what is the meaning of {w}', '{w}'],
    'v': ['what does {w} mean', '{w} definition', 'define {w}', 'what does it mean to {w}', 'meaning of {w}'],
    'a': ['what does {w} mean', '{w} meaning', 'define {w}', 'what is {w}', '{w} definition'],
}


def parse_data(path):
    """-> {offset: (pos, [words], definition, [examples])}"""
    out = {}
    with open(path, encoding='latin-1') as f:
        for line in f:
            if line.startswith('  '):
                continue
            head, _, gloss = line.partition(' | ')
            p = head.split()
            off, ss_type, n = p[0], p[2], int(p[3], 16)
            words = [re.sub(r'\(.*\)$', '', p[4 + 2 * i]).replace('_', ' ') for i in range(n)]
            parts = [x.strip() for x in gloss.strip().split(';')]
            defs = [x for x in parts if not x.startswith('"')]
            exs = [x.strip('"').strip() for x in parts if x.startswith('"')]
            out[f'{ss_type}{off}'] = (ss_type, words, '; '.join(defs).strip(), [e for e in exs if len(e.split()) >= 4])
    return out


def parse_index(path, tag):
    """-> {lemma: [synset keys, most frequent sense first]}"""
    out = {}
    with open(path, encoding='latin-1') as f:
        for line in f:
            if line.startswith('  '):
                continue
            p = line.split()
            lemma, n_syn, n_ptr = p[0].replace('_', ' '), int(p[2]), int(p[3])
            offs = p[4 + n_ptr + 2:]
            out[lemma] = offs[:n_syn]
    return out


def entry(words, definition):
    return f"{', '.join(words)}: {definition}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--work', default=os.path.join(HERE, 'work'))
    ap.add_argument('--wordnet', default='/usr/share/wordnet')
    ap.add_argument('--bi-encoder', default=os.path.join(REPO, 'models', 'all-MiniLM-L6-v2'))
    ap.add_argument('--definition-queries', type=int, default=4000)
    ap.add_argument('--sense-queries', type=int, default=4000)
    ap.add_argument('--neg-pool', type=int, default=16)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--seed', type=int, default=13)
    args = ap.parse_args()
    if not os.path.exists(os.path.join(args.wordnet, 'data.noun')):
        sys.exit(f'no WordNet at {args.wordnet}: apt-get install wordnet-base')
    from lj_states import Tower
    rng = random.Random(args.seed)
    t0 = time.time()
    syn, index = {}, {}
    for pos in ['noun', 'verb', 'adj']:
        for k, v in parse_data(os.path.join(args.wordnet, f'data.{pos}')).items():
            if v[2]:
                syn[k] = v
        tag = pos[0]
        for lemma, offs in parse_index(os.path.join(args.wordnet, f'index.{pos}'), tag).items():
            keys = []
            for o in offs:
                for t in (tag, 's') if tag == 'a' else (tag,):
                    if f'{t}{o}' in syn:
                        keys.append(f'{t}{o}')
                        break
            if keys:
                index[(lemma, tag)] = keys
    keys = sorted(syn)
    row = {k: i for i, k in enumerate(keys)}
    texts = [entry(syn[k][1], syn[k][2]) for k in keys]
    print(f'[general] {len(keys)} synsets with a definition, {len(index)} (lemma, pos) pairs', flush=True)

    tower = Tower(args.bi_encoder, args.threads, 128)
    vec = np.stack([v for _, v in tower.run(tower.encode_ids(texts), batch_tokens=8192, max_batch=256, progress='entries')])

    def contains(k, lemma):
        return any(w.lower() == lemma for w in syn[k][1])

    # definition queries: (lemma, pos) whose lemma is a plain word or phrase, most frequent sense
    cands = [(l, t) for (l, t) in index if re.fullmatch(r"[a-z][a-z '-]{2,40}", l)]
    rng.shuffle(cands)
    defs = cands[: args.definition_queries]
    # sense queries: synsets with an example whose lemma has several senses
    sense_c = []
    for (l, t), ks in index.items():
        if len(ks) >= 2 and re.fullmatch(r"[a-z][a-z '-]{2,40}", l):
            for k in ks:
                for e in syn[k][3]:
                    if re.search(r'\b' + re.escape(l.split()[0][:4]), e.lower()):
                        sense_c.append((l, t, k, e))
    rng.shuffle(sense_c)
    seen_ex, senses = set(), []
    for c in sense_c:
        if c[3] not in seen_ex:
            seen_ex.add(c[3])
            senses.append(c)
        if len(senses) >= args.sense_queries:
            break

    queries = [rng.choice(TEMPLATES[t if t != 's' else 'a']).format(w=l) for l, t in defs] + [e for *_, e in senses]
    qvec = np.stack([v for _, v in tower.run(tower.encode_ids(queries), batch_tokens=8192, max_batch=256, progress='queries')])
    sims = qvec @ vec.T
    recs, used = [], set()
    for i, q in enumerate(queries):
        order = np.argsort(-sims[i])[:200]
        if i < len(defs):
            lemma, t = defs[i]
            pos_k = index[(lemma, t)][0]
            negs = [keys[j] for j in order if keys[j] != pos_k and not contains(keys[j], lemma)]
            kind = 'definition'
        else:
            lemma, t, pos_k, _ = senses[i - len(defs)]
            others = [k for tt in 'nva' for k in index.get((lemma, tt), []) if k != pos_k]
            negs = others + [keys[j] for j in order if keys[j] != pos_k and keys[j] not in others]
            kind = 'sense'
        negs = negs[: args.neg_pool]
        if len(negs) < 4:
            continue
        recs.append({'qid': f'{kind[0]}{i}', 'set': 'wordnet', 'kind': kind, 'query': q,
                     'positives': [{'doc': pos_k, 'grade': 1, 'teacher': 1.0}],
                     'negatives': [{'doc': k, 'teacher': 0.0} for k in negs]})
        used.update([pos_k] + negs)
    data = os.path.join(args.work, 'data')
    os.makedirs(data, exist_ok=True)
    with gzip.open(os.path.join(data, 'general.jsonl.gz'), 'wt') as f:
        for r in recs:
            f.write(json.dumps(r) + '\n')
    with gzip.open(os.path.join(data, 'general_docs.jsonl.gz'), 'wt') as f:
        for k in sorted(used):
            f.write(json.dumps({'set': 'wordnet', 'doc': k, 'text': texts[row[k]]}) + '\n')
    # how hard the groups are for the init: the positive's rank among its group by cosine
    first = collections.Counter()
    for r in recs:
        p = row[r['positives'][0]['doc']]
        qi = int(r['qid'][1:])
        s_pos = sims[qi, p]
        first[r['kind']] += all(s_pos > sims[qi, row[n['doc']]] for n in r['negatives'])
    by_kind = collections.Counter(r['kind'] for r in recs)
    print(json.dumps({'groups': dict(by_kind), 'documents': len(used),
                      'init_ranks_positive_first': {k: round(first[k] / by_kind[k], 3) for k in by_kind},
                      'wall_s': round(time.time() - t0, 1)}), flush=True)


if __name__ == '__main__':
    main()
