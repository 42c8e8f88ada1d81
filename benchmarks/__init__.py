"""Side-by-side benchmarks: the original app's in-process pipeline against the Triton deployment.

``python -m benchmarks`` (``make bench``) measures, in one run on one machine:

- the reference (:mod:`benchmarks.reference`): the original app's pipeline as it ran, in process,
  and beside it the MTCNN-at-full-resolution baseline of DFDC-style pipelines;
- the classifier alone, ONNX Runtime against PyTorch eager on the same faces
  (:mod:`benchmarks.classifier`);
- the embedded tritonserver under perf_analyzer (:mod:`benchmarks.perf`), the classifier with
  random faces and the scoring ensemble end to end with the real video bytes, and the served
  original mode (``original_<N>``);
- where the time goes (the preprocessing library's own timers and Triton's statistics), the
  server's memory across a long series of requests, and the face boxes against full-resolution
  detection;

and writes ``benchmarks/results/latest.json``, ``latest.md``, the perf_analyzer CSV files and
PNG plots (:mod:`benchmarks.report`).
"""
