package advisorylock_test

const helperEnv = "ADVISORYLOCK_TEST_HELPER"

func runHelper() {}
