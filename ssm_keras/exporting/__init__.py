"""A trained supermask as files: baked Keras model, SavedModel and TensorFlow
Lite (`exporter`, `tflite`), the compact file (`compact`), and outputs
replaced together (`staging`); the settings of an export (`config`)."""
