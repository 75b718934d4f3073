"""Data-wise frugality: reach good accuracy with few labels.

- `transfer`: start from a pretrained network (stage `transfer`, `frugalml.datawise.transfer`);
- `semisup`: learn from the unlabelled pool too (stage `semisup`: pseudo-labelling, FixMatch,
  FlexMatch, Mean Teacher);
- `label_issues`: find likely label errors with confident learning (stage `label_issues`);
- `autolabel`: label a pool automatically at a target precision (`frugal label`);
- `active`: simulated active learning (`frugal active`).

Modules import on use; the stage kinds register through `frugalml.stages.STAGE_MODULES`.
"""
