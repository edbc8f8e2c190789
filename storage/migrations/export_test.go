package migrations

// MigrationsOf exposes the discovery of another set of files to the tests.
var MigrationsOf = migrationsOf
