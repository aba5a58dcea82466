"""Interleaved CPU A/B of L1 fp32 (2 threads): timm eager/compiled against our fused/compiled network, minimum
of 4 rounds (for a shared machine). Usage: python benchmarks/cpu_ab.py"""
import torch, time
torch.set_num_threads(2)
from efficientformer.benchmarking import build_model, timm_twin, tune_cpu_allocator
from efficientformer.deploy.optimize import optimize
tune_cpu_allocator()
m = build_model('l1'); t = timm_twin(m)
x32 = torch.randn(32,3,224,224); x1 = torch.randn(1,3,224,224)
with torch.no_grad():
    tc = torch.compile(t, dynamic=False)
    oc = optimize(m, compile=True)
    of = optimize(m)
    fns = {'timm compile': tc, 'ours fused+compile': oc, 'ours fused': of, 'timm eager': t}
    for f in fns.values():
        f(x32); f(x1)
    res = {k: [1e9, 1e9] for k in fns}
    for rnd in range(4):
        for k, f in fns.items():
            s=time.perf_counter(); f(x1); res[k][0]=min(res[k][0], time.perf_counter()-s)
            s=time.perf_counter(); f(x32); res[k][1]=min(res[k][1], time.perf_counter()-s)
    for k,(a,b) in res.items(): print(f"{k}: b1 {a*1e3:.1f} ms, b32 {32/b:.1f} img/s")
