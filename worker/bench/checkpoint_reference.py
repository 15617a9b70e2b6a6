# Reference for the checkpoint bench: the same namespace built in plain Python, then timed through
# what a checkpoint costs at least (each name pickled, zlib level 1) and back. Prints JSON.
# argv: <namespace-building code> <runs>
import json
import pickle
import sys
import time
import zlib

code, runs = sys.argv[1], int(sys.argv[2])
namespace = {}
exec(code, namespace)
names = {k: v for k, v in namespace.items() if not k.startswith("__") and not isinstance(v, type(sys))}
save, load = [], []
for _ in range(runs):
    started = time.perf_counter()
    blob = zlib.compress(pickle.dumps({k: pickle.dumps(v, protocol=5) for k, v in names.items()}, protocol=5), 1)
    save.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    outer = pickle.loads(zlib.decompress(blob))
    {k: pickle.loads(v) for k, v in outer.items()}
    load.append((time.perf_counter() - started) * 1000)
save.sort()
load.sort()
print(json.dumps({"saveMs": save[len(save) // 2], "loadMs": load[len(load) // 2], "sizeBytes": len(blob)}))
