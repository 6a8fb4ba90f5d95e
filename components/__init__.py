"""kfp-tabular: KFP v2 components for tabular ML.

Each stage is a folder holding a plain-Python ``core`` (no KFP) and a thin ``component`` (the
``@dsl.component`` shell that converts artifacts to paths and calls the core).
"""
