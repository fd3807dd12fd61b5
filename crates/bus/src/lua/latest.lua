-- KEYS[1] history stream, KEYS[2] epoch; ARGV[1] at most this many entries.
-- Returns {epoch ('' if none), the newest entries, newest first}, read
-- atomically. (A script rather than MULTI/EXEC: on a cluster, redis-rs
-- follows MOVED for a script after a failover, not inside a transaction.)
return {redis.call('GET', KEYS[2]) or '', redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1])}
