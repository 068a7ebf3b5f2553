-- +migrate Up
CREATE TABLE books (
    id        serial PRIMARY KEY,
    author_id int NOT NULL REFERENCES authors (id),
    title     text NOT NULL
);

-- +migrate StatementBegin
CREATE FUNCTION books_of(a int) RETURNS SETOF books AS $$
BEGIN
    RETURN QUERY SELECT * FROM books WHERE author_id = a;
END;
$$ LANGUAGE plpgsql;
-- +migrate StatementEnd

-- +migrate Down
DROP FUNCTION books_of(int);
DROP TABLE books;
