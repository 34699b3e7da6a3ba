"""Owner actions on the contracts: proposals, approvals, execution, emergency stop and resume, custody and
signing keys, the timeout keeper. `services` is the doorway for writes; the stages live in their own modules."""
