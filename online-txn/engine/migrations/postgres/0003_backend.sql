-- Which back end a journaled request was sent to: the reversal and repair services act only
-- on rows of the back end they deliver to ('host' is the [host] link).
ALTER TABLE txn_journal ADD COLUMN backend TEXT NOT NULL DEFAULT 'host';
