-- +migrate Up notransaction
SET lock_timeout = '2s';
CREATE INDEX CONCURRENTLY books_author_idx ON books (author_id);

-- +migrate Down notransaction
DROP INDEX CONCURRENTLY books_author_idx;
