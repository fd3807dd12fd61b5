-- KEYS[1] history stream, KEYS[2] live channel; ARGV[1] max length, ARGV[2] draft JSON.
return pulse_publish(KEYS[1], KEYS[2], tonumber(ARGV[1]), ARGV[2])
