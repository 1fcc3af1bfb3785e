-- Tenants get names (#21): people pick "acme" from a menu, not "3f0c9a1e…". A tenant is
-- still just the tenant_id its devices carry; this table only names ids. A tenant with
-- devices but no row here is shown by its id, so nothing that predates names breaks.
CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (name <> '' AND length(name) <= 100),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX tenants_name ON tenants (lower(name));

-- The default tenant: devices added without one (`devices add`, an empty tenant_id in an
-- inventory) belong to the nil UUID.
INSERT INTO tenants (id, name) VALUES ('00000000-0000-0000-0000-000000000000', 'default');
