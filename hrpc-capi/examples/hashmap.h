/* The original example includes the original library's hash map header; hrpc needs none. */
