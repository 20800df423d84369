/* A shared library that a test plugin needs and that its loader cannot find. */
int flowrt_test_dependency(void) {
  return 1;
}
