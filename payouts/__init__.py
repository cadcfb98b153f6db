"""Domain layer of the payout engine: configuration, request/response models, amount and
address validation, Stellar transaction helpers, DB models and the SDK client
(see shared/DESIGN.md §2). Filled in by the PayoutWorkflow issue."""
