"""The Lua scripts the broker runs in Redis, in one place.

Each replaces many commands by one: redis-py spends 10-20 µs of CPU packing and parsing
every command, so a batch of N commands costs N times that, while one script call with
N arguments costs about one command plus a microsecond per argument. They also make a
batch atomic. They touch keys of one stream's work only (the stream, its results, its
delayed set); on Redis Cluster those would have to share a hash slot.
"""

from __future__ import annotations

__all__ = ["ADD_MESSAGES", "ADD_MESSAGES_ONCE", "FINISH_MESSAGES", "MOVE_DUE"]

#: XADD each ARGV[2..] as a message's ``data`` to stream KEYS[1]; ARGV[1] is a MAXLEN
#: (approximate) or ''. Returns how many were added.
ADD_MESSAGES = """
local maxlen = ARGV[1]
for i = 2, #ARGV do
  if maxlen == '' then
    redis.call('XADD', KEYS[1], '*', 'data', ARGV[i])
  else
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'data', ARGV[i])
  end
end
return #ARGV - 1
"""

#: ADD_MESSAGES for messages that may be sent more than once (a run whose first send
#: went unconfirmed, sent again): each is added only if its marker KEYS[i + 1] (one per
#: message, ``<stream>:sent:<run id>:<queued at>``) is not set yet, and sets it for
#: ARGV[2] seconds, in the same step. KEYS[1] is the stream, ARGV[1] a MAXLEN or '',
#: ARGV[3..] the messages' data. A send that reached Redis late (it stalled) and the
#: one sent again add the message once, whichever runs first. Returns how many were
#: added.
ADD_MESSAGES_ONCE = """
local maxlen = ARGV[1]
local added = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[2]) then
    if maxlen == '' then
      redis.call('XADD', KEYS[1], '*', 'data', ARGV[i + 1])
    else
      redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'data', ARGV[i + 1])
    end
    added = added + 1
  end
end
return added
"""

#: Store results, then acknowledge messages. KEYS[1] is the stream, KEYS[2..] the result
#: keys; ARGV[1] the consumer group, ARGV[2] the results' time to live in seconds ('' for
#: none), ARGV[3..2+#results] the result values and the rest the message ids to XACK.
#: Returns how many messages were acknowledged.
FINISH_MESSAGES = """
local results = #KEYS - 1
for i = 1, results do
  if ARGV[2] == '' then
    redis.call('SET', KEYS[i + 1], ARGV[i + 2])
  else
    redis.call('SET', KEYS[i + 1], ARGV[i + 2], 'EX', ARGV[2])
  end
end
local ids = {}
for i = results + 3, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then
  return 0
end
return redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
"""

#: Move up to ARGV[2] messages due by ARGV[1] from the delayed set KEYS[1] to the
#: stream KEYS[2] (atomic: each is moved once however many workers poll).
MOVE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, data in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'data', data)
  redis.call('ZREM', KEYS[1], data)
end
return #due
"""
