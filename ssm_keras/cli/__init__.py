"""The command-line programs: one thin module per command over the library,
and the shell they share (`shell`)."""

import os

# oneDNN kernels for convolutions and matrix products on x86 CPUs: masked
# Conv4 trained at 181 images/s with them and 142 without, the masked FCN at
# 35,700 and 31,400 (2 AMD EPYC cores, TensorFlow 2.21; docs/speed.md).
# TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI or AMX,
# and reads the variable once, when it is imported: every command imports
# this package before TensorFlow, so the default holds for the commands
# (TF_ENABLE_ONEDNN_OPTS=0 turns it off). A library user sets it themselves
# before importing TensorFlow.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
