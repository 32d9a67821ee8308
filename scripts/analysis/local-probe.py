"""Classifiers on local-probe.js's features (docs/instruct.md, "Where shape is lost"): for each feature block, a
linear and a one-hidden-layer MLP classifier (256 units) of each object's shape, colour and size, trained on the
first 80 % of the objects and scored on the rest (test accuracy, %). Chance for shape is 20 %.

    /usr/bin/python3 scripts/analysis/local-probe.py [/tmp/local-probe] [shape,colour,size]"""
import json, sys, numpy as np, torch
torch.manual_seed(0); torch.set_num_threads(2)
p = sys.argv[1] if len(sys.argv) > 1 else '/tmp/local-probe'
keys = (sys.argv[2] if len(sys.argv) > 2 else 'shape,colour').split(',')
m = json.load(open(p + '.json')); D = m['D']; lab = m['labels']
X = torch.tensor(np.fromfile(p + '.f32', dtype=np.float32).reshape(-1, D))
n = len(lab); tr = torch.arange(n) < int(n * 0.8); te = ~tr
def probe(F, key, hidden):
    cls = sorted(set(l[key] for l in lab)); y = torch.tensor([cls.index(l[key]) for l in lab])
    F = (F - F[tr].mean(0)) / (F[tr].std(0) + 1e-5)
    lin = torch.nn.Linear
    net = lin(F.shape[1], len(cls)) if not hidden else torch.nn.Sequential(lin(F.shape[1], hidden), torch.nn.GELU(), lin(hidden, len(cls)))
    opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=0.05)
    for _ in range(600):
        loss = torch.nn.functional.cross_entropy(net(F[tr]), y[tr]); opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): return 100 * float((net(F[te]).argmax(-1) == y[te]).float().mean())
print(f"{m['checkpoint']}: {n} objects ({int(te.sum())} scored)")
print(f"{'features':<12} {'numbers':>7}  " + '  '.join(f'{k + " lin / mlp":>20}' for k in keys))
b = m['blocks']
for (name, start), (_, end) in zip(b, b[1:]):
    F = X[:, start:end]
    print(f'{name:<12} {end - start:>7}  ' + '  '.join(f'{probe(F, k, 0):>11.1f} / {probe(F, k, 256):>5.1f}' for k in keys), flush=True)
