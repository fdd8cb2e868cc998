"""The processor this process runs on, as `/proc/cpuinfo` describes it: its
name, its family and model, and the instruction-set features that decide
which kernels TensorFlow can use.

`cpu_info()` is what the measurement commands record beside every figure.
`missing_fast_path(policy)` tells whether a mixed dtype policy has fast
arithmetic here. On x86, TensorFlow's CPU kernels have a fast bfloat16 path
with AVX-512 BF16 dot products or AMX tiles, and a fast float16 path with
AVX-512 FP16 or AMX-FP16; without them the low-precision arithmetic is
slower than float32. Measured with `ssm-benchmark` on an AVX2-only AMD
Zen 3, a masked Conv8 training step took 18 times as long under
`mixed_bfloat16` as in float32 (5 against 92 images/s); on an AMD Zen 4
with AVX-512 BF16, a Conv4 step took 0.64 times as long (docs/speed.md).
"""

import platform

CPUINFO = "/proc/cpuinfo"

# CPU features that decide which kernels TensorFlow can use: vector width,
# and the fast bfloat16 / float16 paths (AVX-512 BF16 and FP16, AMX tiles).
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16",
                "amx_tile")

# The x86 features (any one suffices) that give a mixed policy's compute
# dtype fast arithmetic.
FAST_PATHS = {
    "mixed_bfloat16": ("avx512_bf16", "amx_bf16"),
    "mixed_float16": ("avx512_fp16", "amx_fp16"),
}


def _first_cpuinfo_entry():
    """`CPUINFO`'s fields for the first processor ({} where there is none)."""
    fields = {}
    try:
        with open(CPUINFO, encoding="utf-8") as file:
            for line in file:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_info():
    """Model name, family/model/stepping (which name a processor generation
    when the name does not, e.g. "AMD EPYC" in a virtual machine) and the
    `CPU_FEATURES` present."""
    fields = _first_cpuinfo_entry()
    present = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name") or platform.processor() or platform.machine(),
        "cpu_id": {key.replace(" ", "_"): fields.get(key) for key in
                   ("vendor_id", "cpu family", "model", "stepping")},
        "cpu_flags": [flag for flag in CPU_FEATURES if flag in present],
    }


def describe(info, features=False):
    """`info` (of `cpu_info`) in words: "AMD EPYC (family 25, model 1)", with
    `features` "AMD EPYC (family 25, model 1; avx2 fma)"; the name alone
    where `/proc/cpuinfo` gives no family."""
    ids = info["cpu_id"]
    if ids.get("cpu_family") is None:
        return info["cpu"]
    listed = f"; {' '.join(info['cpu_flags'])}" if features else ""
    return f"{info['cpu']} (family {ids['cpu_family']}, model {ids['model']}{listed})"


def missing_fast_path(policy):
    """The fast-path features `policy` (a dtype policy name) lacks on this
    processor, e.g. `("avx512_bf16", "amx_bf16")`; `()` when it has one of
    them, when `policy` needs none (float32), or when the processor lists
    no x86 features (another architecture, or no `/proc/cpuinfo`: unknown)."""
    wanted = FAST_PATHS.get(policy, ())
    present = set(_first_cpuinfo_entry().get("flags", "").split())
    if not wanted or not present or present & set(wanted):
        return ()
    return wanted
