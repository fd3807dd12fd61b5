-- KEYS[1] history stream, KEYS[2] live channel, KEYS[3] epoch;
-- ARGV[1] max length, ARGV[2] draft JSON, ARGV[3] epoch candidate.
return pulse_publish(KEYS[1], KEYS[2], KEYS[3], ARGV[3], tonumber(ARGV[1]), ARGV[2])
