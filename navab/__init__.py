"""A Jupyter-first workbench that measures and improves how well LLMs align with the values of nations.

Modules:

- `navab.align`: DPO toward a nation's values: preference pairs (question, the nation's statement, its reverse) from extraction, NaVAB release files or GlobalOpinionQA; a held-out split grouped by topic; TRL's `DPOTrainer` with LoRA (peft) or full fine-tuning, resumable; the base and the aligned model measured on the same held-out samples with CIs and paired tests, with the ablation NaVAB reports (the same training on pairs without conflict reduction).
- `navab.blend`: BLEnD (Myung et al., NeurIPS 2024 Datasets and Benchmarks): short-answer questions on everyday life per country, asked in the country's language and in English, each answered by local annotators. A model's short answer is correct when it matches one of the annotators' answers after normalisation. Read from the repository's files or the hub; run as the task `blend`.
- `navab.chat`: Chat-only models: any OpenAI-compatible `/v1/chat/completions` (OpenAI, vLLM and SGLang chat, DeepSeek, Qwen and other compatible APIs, `navab serve`) as a backend named `chat+http(s)://host:port/v1#name`. MC by the answer letter's log-prob where the API returns top log-probs, else by the letter of a generated answer; with rate limits, retries that honour `Retry-After`, counted requests and tokens, and a request budget that stops cleanly.
- `navab.culturalbench`: Everyday cultural knowledge per country (Chiu et al., CulturalBench, CC BY 4.0): the Easy set's four-option questions, scored by the likelihood of the option letters and position-debiased over rotations of the options, and the Hard set's TRUE/FALSE judgment of each option, scored per row and per question. The first of the neighbour benchmarks: each is one task of the tasks chapter, so evaluate, grid and the reports run it with no other change."""

__version__ = "0.1.0"
