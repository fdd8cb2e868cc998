"""The measurements behind the docs: the paper's table (`reproduction`), the
supermask-as-initialisation study (`init_study`), training and inference
speed, `keras.applications` through `supermask`, evaluation and initial
logits."""
