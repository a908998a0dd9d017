"""The audience stage on Apache Flink (Managed Service for Apache Flink): the job
(``fastbreak_flink.job``, PyFlink), what a flush does in plain Python (``fastbreak_flink.flush``),
the local mini-cluster runner (``fastbreak_flink.local``) and the application zip
(``fastbreak_flink.package``). See docs/flink-runtime.md."""
