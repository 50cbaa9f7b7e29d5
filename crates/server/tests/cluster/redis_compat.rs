//! Redis compatibility: the same script of commands, run against a real `redis-server` (Redis
//! 7.0, started by the test on a free port) and against a 3-node Chorus cluster, must get the
//! same replies, byte for byte, errors included.
//!
//! Where Redis leaves an order unspecified (the members of a set, the fields of a hash, the
//! keys of `KEYS` and `SCAN`) the replies are compared as multisets; `SPOP`, `SRANDMEMBER`
//! and `RANDOMKEY` are only checked where their answer is determined (every member, or one). The test prints a table: commands
//! covered, checks made, replies identical, and every difference.
//!
//! It skips, saying so, when `redis-server` is not installed, unless
//! `CHORUS_REQUIRE_REDIS_SERVER=1` (as `.ci/run` sets), when it fails instead.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chorus_resp::Frame;

use crate::harness::{Resp, TestCluster};

/// How two replies are compared.
#[derive(Clone, Copy, PartialEq)]
enum Compare {
    /// Byte for byte.
    Exact,
    /// An array compared as a multiset of its elements.
    Unordered,
    /// A flat array of pairs (field, value) compared as a multiset of pairs.
    Pairs,
    /// A `SCAN` reply: the cursor exactly, the keys as a multiset.
    Scan,
}

use Compare::{Exact, Pairs, Scan, Unordered};

/// The script: every command with how its reply is compared.
fn script() -> Vec<(Compare, Vec<&'static str>)> {
    let text: &[(Compare, &str)] = &[
        // Strings and the key space.
        (Exact, "SET s hello"),
        (Exact, "GET s"),
        (Exact, "TYPE s"),
        (Exact, "TYPE nothing"),
        (Exact, "APPEND s _world"),
        (Exact, "STRLEN s"),
        (Exact, "GETDEL s"),
        (Exact, "GETDEL s"),
        (Exact, "EXISTS s"),
        (Exact, "SET n 10"),
        (Exact, "INCR n"),
        (Exact, "INCRBY n -20"),
        (Exact, "DECR n"),
        (Exact, "DECRBY n 5"),
        (Exact, "RENAME n m"),
        (Exact, "GET m"),
        (Exact, "RENAME nothing x"),
        (Exact, "SET a 1"),
        (Exact, "RENAMENX a m"),
        (Exact, "RENAMENX a b"),
        (Exact, "COPY b c"),
        (Exact, "COPY b c"),
        (Exact, "COPY b c REPLACE"),
        (Exact, "COPY b b"),
        (Exact, "COPY nothing c"),
        (Exact, "MSET k1 v1 k2 v2 k3 v3"),
        (Exact, "MGET k1 k2 nothing k3"),
        (Unordered, "KEYS *"),
        (Unordered, "KEYS k?"),
        (Unordered, "KEYS k[12]"),
        (Unordered, "KEYS [^k]*"),
        (Scan, "SCAN 0"),
        (Scan, "SCAN 0 MATCH k* COUNT 100"),
        (Scan, "SCAN 0 TYPE string"),
        (Exact, "SCAN x"),
        (Exact, "DBSIZE"),
        (Exact, "DEL k1 k2 nothing"),
        (Exact, "UNLINK k3 c"),
        (Exact, "DBSIZE"),
        // Hashes.
        (Exact, "HSET h f1 v1 f2 v2"),
        (Exact, "HSET h f1 v9 f3 v3"),
        (Exact, "HSET h f1"),
        (Exact, "HGET h f1"),
        (Exact, "HGET h nothing"),
        (Exact, "HGET nothing f1"),
        (Exact, "HMGET h f1 nothing f2"),
        (Exact, "HMGET nothing f1"),
        (Exact, "HLEN h"),
        (Exact, "HEXISTS h f2"),
        (Exact, "HEXISTS h nothing"),
        (Exact, "HSTRLEN h f3"),
        (Pairs, "HGETALL h"),
        (Unordered, "HKEYS h"),
        (Unordered, "HVALS h"),
        (Exact, "HGETALL nothing"),
        (Exact, "HSETNX h f1 x"),
        (Exact, "HSETNX h f4 x"),
        (Exact, "HINCRBY h counter 5"),
        (Exact, "HINCRBY h counter -7"),
        (Exact, "HINCRBY h f1 1"),
        (Exact, "HINCRBY h counter x"),
        (Exact, "HINCRBY h counter 9223372036854775807"),
        (Exact, "HMSET h2 a 1 b 2"),
        (Exact, "HDEL h f1 f2 nothing"),
        (Exact, "HDEL h2 a b"),
        (Exact, "EXISTS h2"),
        (Exact, "TYPE h"),
        // Lists.
        (Exact, "LPUSH l a b c"),
        (Exact, "RPUSH l d e"),
        (Exact, "LRANGE l 0 -1"),
        (Exact, "LRANGE l 1 2"),
        (Exact, "LRANGE l -2 100"),
        (Exact, "LRANGE l 5 1"),
        (Exact, "LRANGE nothing 0 -1"),
        (Exact, "LLEN l"),
        (Exact, "LINDEX l 0"),
        (Exact, "LINDEX l -1"),
        (Exact, "LINDEX l 99"),
        (Exact, "LINDEX l x"),
        (Exact, "LSET l 1 B"),
        (Exact, "LSET l 99 B"),
        (Exact, "LSET nothing 0 B"),
        (Exact, "LPOP l"),
        (Exact, "RPOP l"),
        (Exact, "LPOP l 2"),
        (Exact, "LPOP l 0"),
        (Exact, "LPOP l -1"),
        (Exact, "LPOP nothing"),
        (Exact, "LPOP nothing 2"),
        (Exact, "RPUSH r x y x z x"),
        (Exact, "LREM r 2 x"),
        (Exact, "LRANGE r 0 -1"),
        (Exact, "RPUSH r x x"),
        (Exact, "LREM r -1 x"),
        (Exact, "LRANGE r 0 -1"),
        (Exact, "LREM r 0 x"),
        (Exact, "LRANGE r 0 -1"),
        (Exact, "RPUSH t 1 2 3 4 5 6"),
        (Exact, "LTRIM t 1 -2"),
        (Exact, "LRANGE t 0 -1"),
        (Exact, "LTRIM t 10 20"),
        (Exact, "EXISTS t"),
        (Exact, "LPUSHX t a"),
        (Exact, "RPUSHX r w"),
        (Exact, "RPOPLPUSH r t"),
        (Exact, "LMOVE r t LEFT RIGHT"),
        (Exact, "LMOVE r t UP RIGHT"),
        (Exact, "LRANGE t 0 -1"),
        (Exact, "RPOP r 10"),
        (Exact, "EXISTS r"),
        // Sets.
        (Exact, "SADD s1 a b c d"),
        (Exact, "SADD s1 a e"),
        (Exact, "SADD s2 c d e f"),
        (Exact, "SCARD s1"),
        (Exact, "SISMEMBER s1 a"),
        (Exact, "SISMEMBER s1 z"),
        (Exact, "SMISMEMBER s1 a z b"),
        (Unordered, "SMEMBERS s1"),
        (Exact, "SMEMBERS nothing"),
        (Unordered, "SINTER s1 s2"),
        (Unordered, "SUNION s1 s2"),
        (Unordered, "SDIFF s1 s2"),
        (Exact, "SINTER s1 nothing"),
        (Unordered, "SDIFF s1 nothing"),
        (Exact, "SINTERSTORE s3 s1 s2"),
        (Unordered, "SMEMBERS s3"),
        (Exact, "SUNIONSTORE s4 s1 s2"),
        (Exact, "SDIFFSTORE s5 s1 s2"),
        (Exact, "SREM s1 a b nothing"),
        (Exact, "SCARD s1"),
        (Exact, "SADD one only"),
        (Exact, "SPOP one"),
        (Exact, "SPOP one"),
        (Exact, "SADD two x y"),
        (Unordered, "SPOP two 5"),
        (Exact, "SPOP nothing 2"),
        (Exact, "SPOP s1 -1"),
        (Exact, "SPOP s1 1 2"),
        // Sorted sets.
        (Exact, "ZADD z 1 a 2 b 3 c"),
        (Exact, "ZADD z 1.5 d -2 e"),
        (Exact, "ZADD z NX 10 a 4 f"),
        (Exact, "ZADD z XX 20 a 4 g"),
        (Exact, "ZADD z XX CH 21 a 2 b"),
        (Exact, "ZADD z GT CH 1 a 30 b"),
        (Exact, "ZADD z LT CH 1 a 40 c"),
        (Exact, "ZADD z INCR 2.5 a"),
        (Exact, "ZADD z NX INCR 1 a"),
        (Exact, "ZADD z NX XX 1 a"),
        (Exact, "ZADD z GT LT 1 a"),
        (Exact, "ZADD z INCR 1 a 2 b"),
        (Exact, "ZADD z x a"),
        (Exact, "ZADD z 1"),
        (Exact, "ZADD z nan a"),
        (Exact, "ZSCORE z a"),
        (Exact, "ZSCORE z nothing"),
        (Exact, "ZMSCORE z a nothing d"),
        (Exact, "ZCARD z"),
        (Exact, "ZRANGE z 0 -1"),
        (Exact, "ZRANGE z 0 -1 WITHSCORES"),
        (Exact, "ZRANGE z 1 2 REV WITHSCORES"),
        (Exact, "ZRANGE z -inf +inf BYSCORE"),
        (Exact, "ZRANGE z (1 3 BYSCORE WITHSCORES"),
        (Exact, "ZRANGE z +inf -inf BYSCORE REV LIMIT 1 2"),
        (Exact, "ZRANGE z 0 -1 LIMIT 0 1"),
        (Exact, "ZRANGE z x 1 BYSCORE"),
        (Exact, "ZRANGE z a b"),
        (Exact, "ZREVRANGE z 0 1 WITHSCORES"),
        (Exact, "ZRANGEBYSCORE z 1 3"),
        (Exact, "ZRANGEBYSCORE z -inf 2 WITHSCORES LIMIT 0 2"),
        (Exact, "ZREVRANGEBYSCORE z 30 (1"),
        (Exact, "ZRANK z a"),
        (Exact, "ZRANK z nothing"),
        (Exact, "ZREVRANK z a"),
        (Exact, "ZCOUNT z -inf +inf"),
        (Exact, "ZCOUNT z (1.5 3"),
        (Exact, "ZCOUNT z x 3"),
        (Exact, "ZINCRBY z 0.25 e"),
        (Exact, "ZINCRBY z 1 new"),
        (Exact, "ZINCRBY z x e"),
        (Exact, "ZREM z a nothing"),
        (Exact, "ZADD lex 0 a 0 b 0 c 0 d"),
        (Exact, "ZRANGEBYLEX lex - +"),
        (Exact, "ZRANGEBYLEX lex [b (d"),
        (Exact, "ZREVRANGEBYLEX lex + [b"),
        (Exact, "ZRANGE lex (a + BYLEX LIMIT 1 1"),
        (Exact, "ZRANGEBYLEX lex x +"),
        (Exact, "ZPOPMIN lex"),
        (Exact, "ZPOPMAX lex 2"),
        (Exact, "ZPOPMIN nothing"),
        (Exact, "ZRANGE nothing 0 -1"),
        (Exact, "ZSCORE z 1.1"),
        (Exact, "ZADD floats 1.1 x 0.1 y 1e20 z -0.00001 w"),
        (Exact, "ZRANGE floats 0 -1 WITHSCORES"),
        // INCRBYFLOAT and HINCRBYFLOAT (Redis's long double sums, byte for byte), SRANDMEMBER
        // where its answer is determined, LINSERT, LPOS.
        (Exact, "SET fl 10.5"),
        (Exact, "INCRBYFLOAT fl 0.1"),
        (Exact, "INCRBYFLOAT fl -5.0e3"),
        (Exact, "INCRBYFLOAT fl 1e-20"),
        (Exact, "GET fl"),
        (Exact, "INCRBYFLOAT flnew 3.0e3"),
        (Exact, "INCRBYFLOAT flnew 0x1p-2"),
        (Exact, "INCRBYFLOAT flnew 5.000000000000000000001"),
        (Exact, "INCRBYFLOAT flnew -3005.25"),
        (Exact, "INCRBYFLOAT flnew 1.5e-17"),
        (Exact, "INCRBYFLOAT fl x"),
        (Exact, "INCRBYFLOAT fl inf"),
        (Exact, "INCRBYFLOAT fl -inf"),
        (Exact, "INCRBYFLOAT fl nan"),
        (Exact, "INCRBYFLOAT fl 1.7e4932"),
        (Exact, "INCRBYFLOAT flbig 1.1e4930"),
        (Exact, "INCRBYFLOAT flbig 1.1e4932"),
        (Exact, "INCRBYFLOAT flbig 1e4932"),
        (Exact, "INCRBYFLOAT fl"),
        (Exact, "SET flstr abc"),
        (Exact, "INCRBYFLOAT flstr 1"),
        (Exact, "SET flint 17"),
        (Exact, "INCRBYFLOAT flint 0.5"),
        (Exact, "SET flexp 5 EX 100"),
        (Exact, "INCRBYFLOAT flexp 1"),
        (Exact, "TTL flexp"),
        (Exact, "HSET flh a 1 b x"),
        (Exact, "HINCRBYFLOAT flh a 0.1"),
        (Exact, "HINCRBYFLOAT flh b 1"),
        (Exact, "HINCRBYFLOAT flh c -1.5e2"),
        (Exact, "HINCRBYFLOAT flh a inf"),
        (Exact, "HINCRBYFLOAT flh a x"),
        (Exact, "HINCRBYFLOAT flh a 1e4933"),
        (Exact, "HINCRBYFLOAT flh2 f 2.5"),
        (Exact, "HINCRBYFLOAT fl a 1"),
        (Exact, "HINCRBYFLOAT fl a x"),
        (Exact, "INCRBYFLOAT flh 1"),
        (Exact, "INCRBYFLOAT flh x"),
        (Pairs, "HGETALL flh"),
        (Exact, "DEL fl flnew flbig flstr flint flexp flh flh2"),
        (Exact, "SADD sr a b c"),
        (Unordered, "SRANDMEMBER sr 3"),
        (Unordered, "SRANDMEMBER sr 10"),
        (Unordered, "SRANDMEMBER sr 9223372036854775807"),
        (Exact, "SRANDMEMBER sr 0"),
        (Exact, "SRANDMEMBER nothing"),
        (Exact, "SRANDMEMBER nothing 5"),
        (Exact, "SRANDMEMBER nothing -5"),
        (Exact, "SRANDMEMBER sr x"),
        (Exact, "SRANDMEMBER sr 1 2"),
        (Exact, "SRANDMEMBER sr -9223372036854775808"),
        (Exact, "SADD sr1 only"),
        (Exact, "SRANDMEMBER sr1"),
        (Exact, "SRANDMEMBER sr1 -3"),
        (Exact, "SRANDMEMBER sr1 1"),
        (Exact, "SET srs v"),
        (Exact, "SRANDMEMBER srs 1"),
        (Exact, "SRANDMEMBER srs"),
        (Exact, "RPUSH li a b c"),
        (Exact, "LINSERT li BEFORE b x"),
        (Exact, "LINSERT li AFTER c y"),
        (Exact, "LINSERT li after a z"),
        (Exact, "LINSERT li BEFORE nothing q"),
        (Exact, "LINSERT li MIDDLE a q"),
        (Exact, "LINSERT nothing BEFORE a q"),
        (Exact, "LINSERT nothing MIDDLE a q"),
        (Exact, "LINSERT srs BEFORE a q"),
        (Exact, "LINSERT li BEFORE a"),
        (Exact, "LRANGE li 0 -1"),
        (Exact, "RPUSH lp a b c 1 2 3 c c"),
        (Exact, "LPOS lp c"),
        (Exact, "LPOS lp c RANK 2"),
        (Exact, "LPOS lp c RANK -1"),
        (Exact, "LPOS lp c RANK -2 MAXLEN 2"),
        (Exact, "LPOS lp c COUNT 2"),
        (Exact, "LPOS lp c COUNT 0"),
        (Exact, "LPOS lp c RANK -1 COUNT 0"),
        (Exact, "LPOS lp c COUNT 0 MAXLEN 3"),
        (Exact, "LPOS lp c RANK 5"),
        (Exact, "LPOS lp c RANK 5 COUNT 0"),
        (Exact, "LPOS lp c RANK 0"),
        (Exact, "LPOS lp c COUNT -1"),
        (Exact, "LPOS lp c MAXLEN -1"),
        (Exact, "LPOS lp c RANK x"),
        (Exact, "LPOS lp c FOO 1"),
        (Exact, "LPOS lp c RANK"),
        (Exact, "LPOS lp z"),
        (Exact, "LPOS lp z COUNT 1"),
        (Exact, "LPOS nothing a"),
        (Exact, "LPOS nothing a COUNT 1"),
        (Exact, "LPOS nothing a RANK 0"),
        (Exact, "LPOS srs a"),
        (Exact, "LPOS lp c RANK -9223372036854775808"),
        (Exact, "LPOS lp c RANK -9223372036854775808 COUNT 1"),
        (Exact, "LPOS lp c RANK 2 RANK 1"),
        (Exact, "DEL sr sr1 srs li lp"),
        // WRONGTYPE, in both directions.
        (Exact, "SET str v"),
        (Exact, "HSET str f v"),
        (Exact, "HGET str f"),
        (Exact, "LPUSH str a"),
        (Exact, "LRANGE str 0 -1"),
        (Exact, "SADD str a"),
        (Exact, "SMEMBERS str"),
        (Exact, "ZADD str 1 a"),
        (Exact, "ZRANGE str 0 -1"),
        (Exact, "GET h"),
        (Exact, "INCR h"),
        (Exact, "APPEND l2 x"),
        (Exact, "RPUSH l2 a"),
        (Exact, "GET l2"),
        (Exact, "SET l2 x GET"),
        (Exact, "MGET h str"),
        (Exact, "GETDEL z"),
        (Exact, "SINTER s2 h"),
        (Exact, "LMOVE t h LEFT LEFT"),
        (Exact, "LMOVE nothing h LEFT LEFT"),
        (Exact, "LMOVE h t LEFT LEFT"),
        (Exact, "SET h plain"),
        (Exact, "TYPE h"),
        // Scanning collections: small ones come back in one page on both servers.
        (Exact, "HSET hs a 1 b 2 ab 3"),
        (Scan, "HSCAN hs 0"),
        (Exact, "HSCAN hs 0 MATCH a*"),
        (Exact, "HSCAN hs 0 COUNT 0"),
        (Exact, "HSCAN hs x"),
        (Exact, "HSCAN hs 0 TYPE hash"),
        (Exact, "HSCAN nothing 0"),
        (Exact, "SADD ss a b ab"),
        (Scan, "SSCAN ss 0"),
        (Scan, "SSCAN ss 0 MATCH a* COUNT 10"),
        (Exact, "SSCAN hs 0"),
        (Exact, "ZADD zs 1 a 2 b 3 ab"),
        (Exact, "ZSCAN zs 0"),
        (Exact, "ZSCAN zs 0 MATCH a*"),
        (Exact, "ZSCAN zs 0 MATCH"),
        (Exact, "DEL hs ss zs"),
        // Expiry: whatever does not depend on the milliseconds a command takes.
        (Exact, "SET e v EX 100"),
        (Exact, "TTL e"),
        (Exact, "EXPIRETIME nothing"),
        (Exact, "TTL nothing"),
        (Exact, "PTTL nothing"),
        (Exact, "PERSIST e"),
        (Exact, "PERSIST e"),
        (Exact, "PERSIST nothing"),
        (Exact, "TTL e"),
        (Exact, "PTTL e"),
        (Exact, "EXPIRE nothing 10"),
        (Exact, "EXPIRE e 100"),
        (Exact, "TTL e"),
        (Exact, "EXPIRE e 50 GT"),
        (Exact, "EXPIRE e 200 gt"),
        (Exact, "EXPIRE e 10 NX"),
        (Exact, "EXPIRE e 10 XX LT"),
        (Exact, "TTL e"),
        (Exact, "EXPIRE e 10 NX XX"),
        (Exact, "EXPIRE e 10 GT LT"),
        (Exact, "EXPIRE e 10 FOO"),
        (Exact, "EXPIRE e x FOO"),
        (Exact, "EXPIRE e x"),
        (Exact, "EXPIRE e"),
        (Exact, "EXPIRE e 9223372036854775807"),
        (Exact, "PEXPIRE e 9223372036854775807"),
        (Exact, "EXPIREAT e 9223372036854775807"),
        (Exact, "EXPIRE e -9223372036854775808"),
        (Exact, "SET e v KEEPTTL"),
        (Exact, "TTL e"),
        (Exact, "SET e w"),
        (Exact, "TTL e"),
        (Exact, "SET e v EX 0"),
        (Exact, "SET e v EX -1"),
        (Exact, "SET e v EX"),
        (Exact, "SET e v EX 10 PX 10"),
        (Exact, "SET e v KEEPTTL EX 10"),
        (Exact, "SET e v EX 10 KEEPTTL"),
        (Exact, "SET e v EX x"),
        (Exact, "SET e v EX 1.5"),
        (Exact, "SET e v PX 9223372036854775807"),
        (Exact, "SET e v EXAT 9223372036854776"),
        (Exact, "SET e v EXAT 0"),
        (Exact, "SET e v NX EX 10"),
        (Exact, "SET e v2 GET EX 100 EX 100"),
        (Exact, "TTL e"),
        (Exact, "SET e v EXAT 99999999999"),
        (Exact, "EXPIRETIME e"),
        (Exact, "PEXPIRETIME e"),
        (Exact, "SET e v PXAT 1"),
        (Exact, "GET e"),
        (Exact, "EXISTS e"),
        (Exact, "SET e v"),
        (Exact, "GETEX e"),
        (Exact, "GETEX e EX 100"),
        (Exact, "TTL e"),
        (Exact, "GETEX e PERSIST"),
        (Exact, "TTL e"),
        (Exact, "GETEX e EX 0"),
        (Exact, "GETEX e EX"),
        (Exact, "GETEX e PERSIST EX 10"),
        (Exact, "GETEX e FOO"),
        (Exact, "GETEX e EX 9223372036854775807"),
        (Exact, "GETEX e PXAT 1"),
        (Exact, "EXISTS e"),
        (Exact, "GETEX nothing"),
        (Exact, "GETEX"),
        (Exact, "SET e v"),
        (Exact, "EXPIRE e -1"),
        (Exact, "EXISTS e"),
        (Exact, "SET e v EX 100"),
        (Exact, "RENAME e e2"),
        (Exact, "TTL e2"),
        (Exact, "COPY e2 e3"),
        (Exact, "TTL e3"),
        (Exact, "MSET e3 z"),
        (Exact, "TTL e3"),
        (Exact, "APPEND e2 x"),
        (Exact, "TTL e2"),
        (Exact, "SET c 1 EX 100"),
        (Exact, "INCR c"),
        (Exact, "TTL c"),
        (Exact, "HSET eh f v"),
        (Exact, "EXPIRE eh 100 LT"),
        (Exact, "HSET eh g w"),
        (Exact, "TTL eh"),
        (Exact, "GETEX eh"),
        (Exact, "HDEL eh f g"),
        (Exact, "TTL eh"),
        (Exact, "HSET eh f v"),
        (Exact, "TTL eh"),
        (Exact, "SUNIONSTORE c s2"),
        (Exact, "TTL c"),
        (Exact, "DEL e2 e3 c"),
        // Transactions on one connection (WATCH against another connection is checked
        // below).
        (Exact, "EXEC"),
        (Exact, "DISCARD"),
        (Exact, "MULTI"),
        (Exact, "MULTI"),
        (Exact, "SET tx 1"),
        (Exact, "INCR tx"),
        (Exact, "GET tx"),
        (Exact, "HSET tx f v"),
        (Exact, "PING"),
        (Exact, "ECHO hi"),
        (Exact, "EXEC"),
        (Exact, "MULTI"),
        (Exact, "SET tx 2"),
        (Exact, "NOSUCH x"),
        (Exact, "GET tx"),
        (Exact, "EXEC"),
        (Exact, "GET tx"),
        (Exact, "MULTI"),
        (Exact, "SET tx 3"),
        (Exact, "GET"),
        (Exact, "EXEC"),
        (Exact, "MULTI"),
        (Exact, "WATCH tx"),
        (Exact, "SET tx 4"),
        (Exact, "EXEC"),
        (Exact, "WATCH tx"),
        (Exact, "MULTI"),
        (Exact, "SET tx 5"),
        (Exact, "EXEC"),
        (Exact, "MULTI"),
        (Exact, "SET tx 6"),
        (Exact, "DISCARD"),
        (Exact, "GET tx"),
        (Exact, "MULTI"),
        (Exact, "EXEC"),
        (Exact, "WATCH"),
        (Exact, "MULTI"),
        (Exact, "UNWATCH"),
        (Exact, "EXEC"),
        (Exact, "MULTI x"),
        (Exact, "UNWATCH"),
        (Exact, "DEL tx"),
        // Arity and syntax errors.
        (Exact, "HGET h"),
        (Exact, "LPUSH l"),
        (Exact, "SADD s"),
        (Exact, "ZADD z"),
        (Exact, "TYPE"),
        (Exact, "KEYS"),
        (Exact, "FLUSHALL NOW"),
        (Exact, "FLUSHALL"),
        (Exact, "DBSIZE"),
        (Exact, "KEYS *"),
        (Exact, "RANDOMKEY"),
        (Exact, "SET only 1"),
        (Exact, "RANDOMKEY"),
        (Exact, "RANDOMKEY x"),
        (Exact, "DEL only"),
    ];
    text.iter()
        .map(|(compare, line)| (*compare, line.split(' ').collect()))
        .collect()
}

/// Sorts an array's elements (or pairs) so that two orders compare equal.
fn normalized(frame: &Frame, compare: Compare) -> Frame {
    let sort = |items: &[Frame], chunk: usize| -> Vec<Frame> {
        let mut chunks: Vec<&[Frame]> = items.chunks(chunk).collect();
        chunks.sort_by_key(|chunk| format!("{chunk:?}"));
        chunks.concat()
    };
    match (compare, frame) {
        (Unordered, Frame::Array(Some(items))) => Frame::Array(Some(sort(items, 1))),
        (Pairs, Frame::Array(Some(items))) => Frame::Array(Some(sort(items, 2))),
        (Scan, Frame::Array(Some(items))) if items.len() == 2 => Frame::Array(Some(vec![
            items[0].clone(),
            normalized(&items[1], Unordered),
        ])),
        _ => frame.clone(),
    }
}

struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis_server() -> Option<(RedisServer, std::net::SocketAddr)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer(child);
    let address: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(address).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((server, address))
}

/// Proves Chorus answers the data-model script exactly as Redis 7.0 does.
#[test]
fn redis_compat_replies_match_a_real_redis_server() {
    let Some((_redis_server, redis_address)) = start_redis_server() else {
        assert!(
            std::env::var_os("CHORUS_REQUIRE_REDIS_SERVER").is_none(),
            "CHORUS_REQUIRE_REDIS_SERVER is set but redis-server is missing"
        );
        eprintln!("skipping redis_compat: redis-server is not installed");
        return;
    };
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20));
    // A follower, so that writes are forwarded and reads go through ReadIndex remotely.
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&node| node != leader)
        .expect("three nodes");
    let mut redis = Resp::connect(redis_address);
    let mut chorus = Resp::connect(cluster.redis(follower));
    assert_eq!(redis.call(&["FLUSHALL"]), Frame::ok());

    let script = script();
    let mut commands = BTreeSet::new();
    let mut differences = Vec::new();
    for (compare, words) in &script {
        commands.insert(words[0].to_ascii_lowercase());
        let expected = redis.call(words);
        let actual = chorus.call(words);
        if normalized(&expected, *compare) != normalized(&actual, *compare) {
            differences.push(format!(
                "{}\n    redis:  {expected:?}\n    chorus: {actual:?}",
                words.join(" ")
            ));
        }
    }
    // WATCH: a key changed by another connection (or created, or expired) between WATCH and
    // EXEC makes EXEC answer a null array; an untouched one lets it run.
    let mut redis_other = Resp::connect(redis_address);
    let mut chorus_other = Resp::connect(cluster.redis(leader));
    let watch_script: &[(bool, &str)] = &[
        (false, "SET w 1"),
        (false, "WATCH w"),
        (true, "SET w 2"),
        (false, "MULTI"),
        (false, "SET w 3"),
        (false, "EXEC"),
        (false, "GET w"),
        (false, "WATCH w"),
        (true, "SET w 2"),
        (false, "UNWATCH"),
        (false, "MULTI"),
        (false, "SET w 4"),
        (false, "EXEC"),
        (false, "WATCH w absent"),
        (true, "SET absent 1"),
        (false, "MULTI"),
        (false, "PING"),
        (false, "EXEC"),
        (false, "WATCH w absent2"),
        (true, "GET w"),
        (false, "MULTI"),
        (false, "INCR w"),
        (false, "EXEC"),
        (false, "SET wk 1 PX 100"),
        (false, "WATCH wk"),
    ];
    for (other, line) in watch_script {
        let words: Vec<&str> = line.split(' ').collect();
        let (expected, actual) = if *other {
            (redis_other.call(&words), chorus_other.call(&words))
        } else {
            (redis.call(&words), chorus.call(&words))
        };
        if expected != actual {
            differences.push(format!(
                "{line}\n    redis:  {expected:?}\n    chorus: {actual:?}"
            ));
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    for line in ["MULTI", "GET wk", "EXEC", "DEL w absent"] {
        let words: Vec<&str> = line.split(' ').collect();
        let (expected, actual) = (redis.call(&words), chorus.call(&words));
        if expected != actual {
            differences.push(format!(
                "{line}\n    redis:  {expected:?}\n    chorus: {actual:?}"
            ));
        }
    }
    // Keys expire by time: after their expiry, reads on every node miss them, and the leader
    // removes a key nobody reads through the log (a time tick) on its own.
    let timed = [
        vec!["SET", "t1", "v", "PX", "150"],
        vec!["SET", "t2", "v", "PX", "150"],
        vec!["HSET", "t3", "f", "v"],
        vec!["PEXPIRE", "t3", "150"],
        vec!["SET", "t4", "v", "PX", "150"],
    ];
    for words in &timed {
        let expected = redis.call(words);
        let actual = chorus.call(words);
        if expected != actual {
            differences.push(format!(
                "{}\n    redis:  {expected:?}\n    chorus: {actual:?}",
                words.join(" ")
            ));
        }
    }
    let applied_before = cluster.status(leader).expect("the leader answers").applied;
    std::thread::sleep(Duration::from_millis(500));
    let applied_after = cluster.status(leader).expect("the leader answers").applied;
    assert!(
        applied_after > applied_before,
        "no time tick went through the log while keys were due ({applied_before} → {applied_after})"
    );
    for (words, node) in [
        (vec!["GET", "t1"], follower),
        (vec!["EXISTS", "t2"], leader),
        (vec!["HGET", "t3", "f"], follower),
    ] {
        let expected = redis.call(&words);
        let actual = Resp::connect(cluster.redis(node)).call(&words);
        if expected != actual {
            differences.push(format!(
                "{} (after expiry, n{node})\n    redis:  {expected:?}\n    chorus: {actual:?}",
                words.join(" ")
            ));
        }
    }
    for node in cluster.ids() {
        let answer = Resp::connect(cluster.redis(node)).call(&["GET", "t4"]);
        assert_eq!(
            answer,
            Frame::Bulk(None),
            "n{node} still returns an expired key"
        );
    }
    let script_len = script.len() + timed.len() + 3 + watch_script.len() + 4;
    println!(
        "redis_compat: {} commands covered, {} checks, {} identical, {} different",
        commands.len(),
        script_len,
        script_len - differences.len(),
        differences.len()
    );
    for difference in &differences {
        println!("  DIFFERENT {difference}");
    }
    assert!(
        differences.is_empty(),
        "{} of {} replies differ from Redis:\n{}",
        differences.len(),
        script_len,
        differences.join("\n")
    );
}
