"""Upper-bound probe for the instruct stage (docs/instruct.md, "A probe"): a small transformer trained from scratch
(all weights, PyTorch) on the frozen image features the instruct stage caches and the question words, answering the
VQA records. Tells whether the features and the data carry what a question type needs, independent of LoRA.

    /usr/bin/python3 scripts/analysis/vqa-probe.py --tr CACHE/instruct-<train>.json --trf CACHE/instruct-features-<train>.f32 \
        --ev CACHE/instruct-<eval>.json --evf CACHE/instruct-features-<eval>.f32 [--types position] [--pos] \
        [--layers 2] [--bs 32] [--steps 2000]

The .json files are the instruct stage's cached records (data.cacheDir), the .f32 files their pooled features
[n, 17, 128] (small chain: 32 px, patch 4, pool 2); --pos adds learned positions to the image tokens."""
import json, sys, re, numpy as np, torch, torch.nn as nn
torch.manual_seed(0); torch.set_num_threads(1)
def arg(k):
    if k not in sys.argv: sys.exit(f'vqa-probe: missing {k} (see the docstring)')
    return sys.argv[sys.argv.index(k)+1]
tr=json.load(open(arg('--tr')))['examples']
ev=json.load(open(arg('--ev')))['examples']
Ftr=np.fromfile(arg('--trf'),dtype=np.float32).reshape(-1,17,128)
Fev=np.fromfile(arg('--evf'),dtype=np.float32).reshape(-1,17,128)
pos2d = '--pos' in sys.argv
steps = int(sys.argv[sys.argv.index('--steps')+1]) if '--steps' in sys.argv else 3000
types = sys.argv[sys.argv.index('--types')+1].split(',') if '--types' in sys.argv else None
def words(q): return re.findall(r"[a-z0-9]+", q.lower().replace('look at the image.',''))
vocab={'<pad>':0}; ans={}
for e in tr+ev:
    for w in words(e['question']): vocab.setdefault(w,len(vocab))
    for a in e['answers']: ans.setdefault(a,len(ans))
def enc(ex):
    ex=[e for e in ex if types is None or e['qtype'] in types]
    T=max(len(words(e['question'])) for e in ex)
    q=np.zeros((len(ex),16),dtype=np.int64)
    for i,e in enumerate(ex):
        w=[vocab[x] for x in words(e['question'])][:16]; q[i,:len(w)]=w
    return ex,torch.tensor(q),torch.tensor([e['images'][0] for e in ex]),torch.tensor([ans[e['answers'][0]] for e in ex])
trx,trq,tri,tra=enc(tr); evx,evq,evi,eva=enc(ev)
Ftr=torch.tensor(Ftr); Fev=torch.tensor(Fev)
d=128
LAYERS=int(sys.argv[sys.argv.index("--layers")+1]) if "--layers" in sys.argv else 4
BS=int(sys.argv[sys.argv.index("--bs")+1]) if "--bs" in sys.argv else 64
class P(nn.Module):
    def __init__(s):
        super().__init__()
        s.proj=nn.Sequential(nn.Linear(128,d),nn.GELU(),nn.Linear(d,d))
        s.wemb=nn.Embedding(len(vocab),d); s.pos=nn.Parameter(torch.randn(17+16+1,d)*0.02)
        s.cls=nn.Parameter(torch.zeros(1,1,d))
        s.enc=nn.TransformerEncoder(nn.TransformerEncoderLayer(d,4,4*d,0.1,batch_first=True,norm_first=True),LAYERS)
        s.out=nn.Linear(d,len(ans))
    def forward(s,f,q):
        B=f.shape[0]
        img=s.proj(f)
        x=torch.cat([img,s.wemb(q),s.cls.expand(B,1,d)],1)+(s.pos if pos2d else torch.cat([torch.zeros(17,d),s.pos[17:]]))
        mask=torch.cat([torch.zeros(B,17,dtype=torch.bool),q==0,torch.zeros(B,1,dtype=torch.bool)],1)
        return s.out(s.enc(x,src_key_padding_mask=mask)[:,-1])
m=P(); opt=torch.optim.AdamW(m.parameters(),1e-3,weight_decay=0.05)
sched=torch.optim.lr_scheduler.OneCycleLR(opt,1e-3,total_steps=steps,pct_start=0.05)
def evaluate():
    m.eval()
    with torch.no_grad(): p=m(Fev[evi],evq).argmax(-1)
    m.train()
    res={}
    for t in sorted(set(e['qtype'] for e in evx)):
        idx=[i for i,e in enumerate(evx) if e['qtype']==t]
        res[t]=round(100*float((p[idx]==eva[idx]).float().mean()),1)
    # position split by form
    yn=[i for i,e in enumerate(evx) if e['qtype']=='position' and e['answers'][0] in ('yes','no')]
    wh=[i for i,e in enumerate(evx) if e['qtype']=='position' and e['answers'][0] not in ('yes','no')]
    if yn: res['pos-is']=round(100*float((p[yn]==eva[yn]).float().mean()),1)
    if wh: res['pos-what']=round(100*float((p[wh]==eva[wh]).float().mean()),1)
    return res
for st in range(steps):
    b=torch.randint(0,len(trx),(BS,))
    loss=nn.functional.cross_entropy(m(Ftr[tri[b]],trq[b]),tra[b])
    opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    if (st+1)%500==0: print(st+1, round(loss.item(),3), evaluate(), flush=True)
