"""A Jupyter-first workbench that measures and improves how well LLMs align with the values of nations.

Modules:

- `navab.align`: DPO toward a nation's values: preference pairs (question, the nation's statement, its reverse) from extraction, NaVAB release files or GlobalOpinionQA; a held-out split grouped by topic; TRL's `DPOTrainer` with LoRA (peft) or full fine-tuning, resumable; the base and the aligned model measured on the same held-out samples with CIs and paired tests, with the ablation NaVAB reports (the same training on pairs without conflict reduction)."""

__version__ = "0.1.0"
