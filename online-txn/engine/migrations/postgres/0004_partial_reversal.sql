-- Partial reversals (seed 001 §7.3, ISO 8583:1987 F95 "replacement amounts"): the amount that
-- stands after the reversal (NULL: a full reversal) and the amount the reversal gives back.
-- Rows queued before this version have both NULL: full reversals of the row's amount.
ALTER TABLE reversal_queue ADD COLUMN replacement_minor BIGINT;
ALTER TABLE reversal_queue ADD COLUMN reversed_minor BIGINT;
