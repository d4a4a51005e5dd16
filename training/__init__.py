"""Training, synthetic phantoms and evaluation of the demonstration models.

Not part of the running node: nothing in node/, workers/ or models/ imports this
package. It uses them (the model contract, and the worker's preprocessing and
inference, so a model learns on what it will be fed), and writes a package's
weights, sha256, metrics and model-card sections.
"""
