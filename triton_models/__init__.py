"""Triton python-backend adapters: parse the model config once, call library code, shape responses.

Each ``model_repository/<model>/1/model.py`` imports its ``TritonPythonModel`` from here, so one
implementation serves every sequence length.
"""
