-- +migrate Up notransaction
CREATE INDEX CONCURRENTLY books_author_idx ON books (author_id);

-- +migrate Down notransaction
DROP INDEX CONCURRENTLY books_author_idx;
