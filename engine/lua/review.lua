-- review.lua: an operator's decision on orders waiting for review.
-- approve: the order enters the shard's stream (claimed like any other, arrival kept);
-- reject: it ends as rejected with reason "review".
-- KEYS[1]  the shard's review line
-- KEYS[2]  the shard's order stream
-- KEYS[3]  the shard's expiry index
-- KEYS[4]  the shard's webhook outbox
-- KEYS[5]  the order record
-- KEYS[6]  the shard's settle stream (a rejected order with points: give them back)
-- KEYS[7]  the shard's decided stream (the retention's index)
-- ARGV[1]  order id
-- ARGV[2]  "approve" or "reject"
-- ARGV[3]  now, unix milliseconds
-- ARGV[4]  who decided
-- Returns  {status before, status after}; equal when the order was not waiting for review.
local oid, record, now = ARGV[1], KEYS[5], ARGV[3]
local fields = redis.call('HMGET', record, 'st', 'why', 'r', 'seq', 'nu', 'pt')
if fields[1] ~= 'queued' or fields[2] ~= 'review' or not redis.call('ZSCORE', KEYS[1], oid) then
  return {fields[1] or '', fields[1] or ''}
end
redis.call('ZREM', KEYS[1], oid)
redis.call('ZREM', KEYS[3], oid)
local after
if ARGV[2] == 'approve' then
  after = 'pending'
  redis.call('HSET', record, 'st', 'pending', 'a', now, 'rv', ARGV[4])
  redis.call('HDEL', record, 'why', 'qexp')
  redis.call('XADD', KEYS[2], '*', 's', fields[4], 'p', fields[3])
else
  after = 'rejected'
  redis.call('HSET', record, 'st', 'rejected', 'why', 'review', 'u', now, 'rv', ARGV[4])
  redis.call('HDEL', record, 'qexp')
  redis.call('XADD', KEYS[7], '*', 'o', oid)
  if fields[6] then
    redis.call('XADD', KEYS[6], '*', 'o', oid, 'd', 'void')
  end
end
if fields[5] then
  redis.call('XADD', KEYS[4], '*', 'o', oid, 'st', after, 'u', now,
    'why', after == 'rejected' and 'review' or '', 'x', 0, 'p', 0)
end
return {'queued', after}
