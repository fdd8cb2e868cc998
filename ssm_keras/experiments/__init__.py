"""The measurements behind the docs: the paper's table (`reproduction`), the
supermask-as-initialisation study (`init_study`), training and inference
speed, `keras.applications` through `supermask`, evaluation and initial
logits; the settings of the commands that run on TensorFlow (`config`) and
the measurements' report files (`reports`)."""
