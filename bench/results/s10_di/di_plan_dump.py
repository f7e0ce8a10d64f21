import dataclasses, json, sys, warnings, torch
torch.set_num_threads(1)
from datafree.cards import load_model
from datafree.plan import plan
import datafree
out = {"datafree": datafree.__file__}
for t in sys.argv[1:]:
    from bench.suite import resolve_teacher
    lm = load_model(resolve_teacher(t))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = plan(lm, method="deepinversion")
    out[t] = {"num_images": p.num_images, "kd": dataclasses.asdict(p.kd), "method_options": p.method_options,
              "synth": dataclasses.asdict(p.synthesizer.config)}
print(json.dumps(out, indent=1, sort_keys=True, default=str))
