-- +goose Up
ALTER TABLE users ADD COLUMN team text;
