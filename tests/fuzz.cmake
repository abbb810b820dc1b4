# libFuzzer targets (PLASMON_FUZZ=ON, clang): one per decoder of outside
# bytes, each beside the code it fuzzes. Run them with tools/fuzz.sh; seeds
# are in tests/fuzz_corpus/<target>/ (docs/TESTING.md).
function(plasmon_fuzz_target name source)
  add_executable(${name} ${PROJECT_SOURCE_DIR}/${source})
  target_link_libraries(${name} PRIVATE ${ARGN})
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
endfunction()

plasmon_fuzz_target(protocol_fuzz core/protocol_fuzz.cc plasmon_core)
plasmon_fuzz_target(parse_fuzz core/parse_fuzz.cc plasmon_core)
plasmon_fuzz_target(tcp_wire_fuzz transport/tcp_wire_fuzz.cc plasmon_transport)
plasmon_fuzz_target(verbs_wire_fuzz transport/verbs_wire_fuzz.cc plasmon_transport)
plasmon_fuzz_target(directory_fuzz store/directory_fuzz.cc plasmon_store)

# Writes the seed corpora from real encoded messages: fuzz_seeds DIR.
add_executable(fuzz_seeds ${PROJECT_SOURCE_DIR}/tests/fuzz_seeds.cc)
target_link_libraries(fuzz_seeds PRIVATE plasmon_transport plasmon_store)
add_custom_target(fuzz DEPENDS protocol_fuzz parse_fuzz tcp_wire_fuzz verbs_wire_fuzz directory_fuzz
                               fuzz_seeds)
