-- 0004_plpgsql_helpers: wgk_node_of and wgk_addr_text as plpgsql, with the
-- same results. A SQL-language function called from plpgsql (every
-- trigger, every create) plans its body again at each call, about 40–70 µs
-- each time, a fifth of a create's time on the server; plpgsql keeps its
-- plans for the session.

CREATE OR REPLACE FUNCTION wgk_node_of(iface text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n text;
BEGIN
    SELECT node INTO n FROM node_interfaces WHERE interface = iface;
    RETURN coalesce(n, '');
END
$$;

CREATE OR REPLACE FUNCTION wgk_addr_text(a inet) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
DECLARE
    n bigint;
BEGIN
    IF family(a) = 6 AND a <<= '::/96'::inet THEN
        n := a - '::'::inet;
        IF n = 0 THEN
            RETURN '::';
        ELSIF n >> 16 = 0 THEN
            RETURN '::' || to_hex(n);
        END IF;
        RETURN '::' || to_hex(n >> 16) || ':' || to_hex(n & 65535);
    END IF;
    RETURN host(a);
END
$$;
