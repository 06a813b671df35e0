package dataapitest

import (
	"crypto/rand"
	"fmt"
	"net/http"
)

// apiError is one entry of a response's "errors" list (reference data-api.md §1.4), plus the
// HTTP status override its code carries (§1.3).
type apiError struct {
	code, family, scope, title, message string
	docIDs                              []any
	status                              int // 0 means 200
	violation                           bool
}

// errObj is the wire form of apiError, fields in the server's order.
type errObj struct {
	ID          string `json:"id"`
	Family      string `json:"family"`
	Scope       string `json:"scope"`
	ErrorCode   string `json:"errorCode"`
	Title       string `json:"title"`
	Message     string `json:"message"`
	DocumentIDs []any  `json:"documentIds,omitempty"`
}

func (e *apiError) wire() errObj {
	return errObj{ID: newUUID(4), Family: e.family, Scope: e.scope, ErrorCode: e.code,
		Title: e.title, Message: e.message, DocumentIDs: e.docIDs}
}

func (e *apiError) withIDs(ids ...any) *apiError {
	c := *e
	c.docIDs = ids
	return &c
}

// Families and scopes (DA ErrorFamily, errors.yaml).
const (
	famRequest = "REQUEST"
	famServer  = "SERVER"
)

// reqErr builds a REQUEST-family error. Every REQUEST error except DOCUMENT_ALREADY_EXISTS is
// something a correct client never triggers, so it is recorded as a violation.
func reqErr(scope, code, title, format string, args ...any) *apiError {
	return &apiError{code: code, family: famRequest, scope: scope, title: title,
		message: fmt.Sprintf(format, args...), violation: code != "DOCUMENT_ALREADY_EXISTS"}
}

// Texts follow errors.yaml of stargate/data-api where the code is defined there; codes that
// live only in the legacy ErrorCodeV1 enum (VECTOR_SIZE_MISMATCH, MISSING_AUTHENTICATION_TOKEN,
// UNKNOWN_COLLECTION_OR_TABLE) carry texts modelled on it.

func errMissingToken() *apiError {
	e := reqErr("SECURITY", "MISSING_AUTHENTICATION_TOKEN", "Missing authentication token",
		"Role unauthorized for operation: Missing token, expecting one in the Token header.")
	e.status = http.StatusUnauthorized
	return e
}

func errBadToken() *apiError {
	e := reqErr("SECURITY", "UNAUTHENTICATED_REQUEST", "Authentication failed",
		"Authentication failed for request due to invalid token.\n\nResend with valid authentication token.")
	e.status = http.StatusUnauthorized
	return e
}

func errContentType(ct string) *apiError {
	e := reqErr("", "UNSUPPORTED_CONTENT_TYPE", "Unsupported Content-Type",
		"Request sent with unsupported 'Content-Type' header: %q\n\nResend with supported 'Content-Type' header.", ct)
	e.status = http.StatusUnsupportedMediaType
	return e
}

func errNotJSON(problem string) *apiError {
	return reqErr("", "REQUEST_NOT_JSON", "Request not valid JSON",
		"Request not valid JSON, problem: %s.\n\nResend request as valid JSON.", problem)
}

func errStructure(problem string) *apiError {
	return reqErr("", "REQUEST_STRUCTURE_MISMATCH", "Request structure not valid",
		"Request is valid JSON but has a structural mismatch: %s.\n\nResend request with valid structure.", problem)
}

func errUnknownCommand(cmd, kind string, known []string) *apiError {
	return reqErr("", "COMMAND_UNKNOWN", "Command is not recognized by Data API",
		"Command '%s' is not a %s recognized by Data API.\n\nData API supports following %ss: %v.\n\nResend using one of the supported commands.",
		cmd, kind, kind, known)
}

func errFieldUnknown(field, msg string) *apiError {
	return reqErr("", "COMMAND_FIELD_UNKNOWN", "Command field unknown",
		"Command field '%s' not recognized: %s.\n\nResend command with valid command fields.", field, msg)
}

func errFieldValue(field, value, msg string) *apiError {
	return reqErr("", "COMMAND_FIELD_VALUE_INVALID", "Command field value invalid",
		"Command field '%s' value %s not valid: %s.\n\nResend command with valid value.", field, value, msg)
}

func errNoOptions(cmd string) *apiError {
	return reqErr("", "COMMAND_ACCEPTS_NO_OPTIONS", "Command accepts no options",
		"Command '%s' does not accept options but some were included.\n\nResend command without options.", cmd)
}

func errUnknownKeyspace(ks string) *apiError {
	return reqErr("SCHEMA", "UNKNOWN_KEYSPACE", "Keyspace does not exist in the Database",
		"The command tried to use a Keyspace that does not exist in the Database.\n\nThe keyspace used by the command: %s.\n\nResend the command using a Keyspace that exists.", ks)
}

func errUnknownCollection(ks, coll string) *apiError {
	return reqErr("SCHEMA", "UNKNOWN_COLLECTION_OR_TABLE", "Collection or table does not exist",
		"The command tried to use a Collection or Table that does not exist in the Keyspace.\n\nThe keyspace used by the command: %s.\nThe collection or table used by the command: %s.\n\nResend the command using a Collection or Table that exists.", ks, coll)
}

func errSchemaName(kind, name string) *apiError {
	return reqErr("SCHEMA", "UNSUPPORTED_SCHEMA_NAME", "The used schema name is not supported",
		"The command attempted to create a %s with a name that is not supported.\n\nThe supported %s names must not be empty, more than 48 characters long, or contain non-alphanumeric-underscore characters.\nThe command used the unsupported %s name: '%s'.\n\nResend the command using a supported %s name.",
		kind, kind, kind, name, kind)
}

func errDifferentSettings(name string) *apiError {
	return reqErr("SCHEMA", "EXISTING_COLLECTION_DIFFERENT_SETTINGS", "Collection already exists with different settings",
		"Collection '%s' already exists but with settings different from ones passed with 'createCollection' command.\n\nIf you need to change collection settings you will need to 'deleteCollection', then re-create with new settings.", name)
}

func errTooManyCollections(name string, maxN, have int) *apiError {
	e := &apiError{code: "TOO_MANY_COLLECTIONS", family: famServer, scope: "DATABASE", title: "Too many collections",
		message:   fmt.Sprintf("Cannot create collection '%s': the maximum number of collections per database is %d, database already has %d.", name, maxN, have),
		violation: true}
	return e
}

func errCreateOptions(msg string) *apiError {
	return reqErr("SCHEMA", "INVALID_CREATE_COLLECTION_OPTIONS", "Invalid options for createCollection",
		"'createCollection' command option(s) invalid: %s\n\nResend 'createCollection' with valid options.", msg)
}

func errIndexingDef(msg string) *apiError {
	return reqErr("SCHEMA", "INVALID_INDEXING_DEFINITION", "Invalid indexing definition",
		"'createCollection' indexing definition invalid: %s.\n\nResend 'createCollection' with valid indexing definition.", msg)
}

func errAlreadyExists(id any) *apiError {
	return reqErr("DOCUMENT", "DOCUMENT_ALREADY_EXISTS", "Document the given _id already exists",
		"Cannot insert the document: a document already exists with given '_id' (%s). \n\nEither resend the command with distinct '_id', or use an update command instead.", idText(id)).withIDs(id)
}

func errDocLimit(detail string) *apiError {
	return reqErr("DOCUMENT", "SHRED_DOC_LIMIT_VIOLATION", "Document size limitation violated",
		"Document size limitation violated: %s.", detail)
}

func errFieldName(detail string) *apiError {
	return reqErr("DOCUMENT", "SHRED_BAD_FIELD_NAME", "Document field name not valid",
		"Document field name not valid: %s.", detail)
}

func errDocIDType(detail string) *apiError {
	return reqErr("DOCUMENT", "SHRED_BAD_DOCID_TYPE", "Bad type for '_id' field", "Bad type for '_id' field: %s.", detail)
}

func errDocIDValue(detail string) *apiError {
	return reqErr("DOCUMENT", "SHRED_BAD_DOCID_VALUE", "Bad value for '_id' field", "Bad value for '_id' field: %s.", detail)
}

func errDocType(jsonType string) *apiError {
	return reqErr("DOCUMENT", "SHRED_BAD_DOCUMENT_TYPE", "Bad document type to shred",
		"Bad document type to shred: document must be a JSON Object, instead got a JSON %s.", jsonType)
}

func errEJSON(detail string) *apiError {
	return reqErr("DOCUMENT", "SHRED_BAD_EJSON_VALUE", "Bad JSON Extension value to shred",
		"Bad JSON Extension value to shred: %s.", detail)
}

func errVectorValue(nodeType, value string) *apiError {
	return reqErr("DOCUMENT", "SHRED_BAD_VECTOR_VALUE", "Bad $vector value",
		"Bad $vector value: needs to be an array containing only Numbers but has a %s value (%s).", nodeType, value)
}

func errVectorEmpty() *apiError {
	return reqErr("DOCUMENT", "SHRED_BAD_VECTOR_SIZE", "Bad $vector value", "Bad $vector value: cannot be empty Array.")
}

func errVectorType(detail string) *apiError {
	return reqErr("DOCUMENT", "SHRED_BAD_DOCUMENT_VECTOR_TYPE", "Bad $vector value to shred",
		"Bad $vector value to shred: %s.", detail)
}

func errVectorMismatch(dim, got int) *apiError {
	return reqErr("", "VECTOR_SIZE_MISMATCH", "Length of vector parameter different from declared '$vector' dimension",
		"Length of vector parameter different from declared '$vector' dimension: root cause = (InvalidQueryException) vector<float, %d> given %d values", dim, got)
}

func errVectorNotEnabled() *apiError {
	return reqErr("", "VECTOR_SEARCH_NOT_SUPPORTED", "Vector search is not enabled for the collection",
		"Vector search is not enabled for the collection")
}

func errNoEmbeddingService(coll string) *apiError {
	return reqErr("SCHEMA", "EMBEDDING_SERVICE_NOT_CONFIGURED", "Embedding service not configured for collection",
		"Collection '%s' does not have embedding service configured: cannot vectorize data.\n\nCollection must be recreated with embedding service configuration to allow vectorization.", coll)
}

func errFilter(format string, args ...any) *apiError {
	return reqErr("FILTER", "FILTER_INVALID_EXPRESSION", "Unsupported filter clause",
		"Unsupported filter clause: %s.\n\nResend the command using only supported filter expressions and paths.", fmt.Sprintf(format, args...))
}

func errFilterOperator(op string) *apiError {
	return reqErr("FILTER", "FILTER_UNSUPPORTED_OPERATOR", "Unsupported filter operator",
		"Unsupported filter operator '%s'.\n\nResend the command using only supported operators.", op)
}

func errFilterUnindexed(path string) *apiError {
	return reqErr("FILTER", "FILTER_PATH_UNINDEXED", "Collection path used in filter clause not indexed",
		"Collection path '%s' is not indexed: cannot filter on that path.\n\nResend the command with filter clause without such paths.", path)
}

func errFilterTooMany(n int) *apiError {
	return reqErr("FILTER", "FILTER_FIELDS_LIMIT_VIOLATION", "Filter fields size limitation violated",
		"Filter has %d fields, exceeds maximum allowed (%d).\n\nResend the command with filter that does not exceed maximum field count.", n, maxFilterExprs)
}

func errSort(problem string) *apiError {
	return reqErr("SORT", "SORT_CLAUSE_INVALID", "Sort clause used by command not valid",
		"Sort clause used by command not valid.\nProblem: %s.\n\nResend the command with a valid sort clause.", problem)
}

func errSortValue(path, problem string) *apiError {
	return reqErr("SORT", "SORT_CLAUSE_VALUE_INVALID", "Value used for sort expression not valid",
		"Value used for sort expression on path '%s' not valid: %s.\n\nResend the command with valid sort expression value.", path, problem)
}

func errSortUnindexed(path string) *apiError {
	return reqErr("SORT", "SORT_CLAUSE_PATH_UNINDEXED", "Collection field used in sort clause not indexed",
		"Collection field '%s' is not indexed: cannot sort using it. \n\nResend the command with sort on an indexed field.", path)
}

func errSortOverload() *apiError {
	return reqErr("SORT", "OVERLOADED_SORT_ROW_LIMIT", "Sort aborted due to in-memory sort restriction",
		"The command used in-memory sorting which has a limit of %d documents. \n\nConsult any warnings included in the response for how to improve the sort performance.\n\nResend the command using a more specific filter to reduce the number of documents sorted.", maxSortRows)
}

func errVectorSortUnsupported(ks, coll string) *apiError {
	return reqErr("SORT", "UNSUPPORTED_VECTOR_SORT_FOR_COLLECTION", "Vector sorting not supported by the collection",
		"The command attempted to vector sort against a collection that does not have vectors enabled. \n\nThe collection %s.%s does not have vectors enabled.", ks, coll)
}

func errProjection(detail string) *apiError {
	return reqErr("PROJECTION", "UNSUPPORTED_PROJECTION_PARAM", "Unsupported projection parameter",
		"Unsupported projection parameter: %s.\n\nResend the command with valid projection definition.", detail)
}

func errUpdateOp(detail string) *apiError {
	return reqErr("UPDATE", "UNSUPPORTED_UPDATE_OPERATION", "Unsupported update operation",
		"Unsupported update operation: %s.", detail)
}

func errUpdateParam(detail string) *apiError {
	return reqErr("UPDATE", "UNSUPPORTED_UPDATE_OPERATION_PARAM", "Unsupported update operation parameter",
		"Unsupported update operation parameter: %s.", detail)
}

func errUpdateTarget(detail string) *apiError {
	return reqErr("UPDATE", "UNSUPPORTED_UPDATE_OPERATION_TARGET", "Unsupported target JSON value for update operation",
		"Unsupported target JSON value for update operation: %s.", detail)
}

func errUpdateDocID(op string) *apiError {
	return reqErr("UPDATE", "UNSUPPORTED_UPDATE_OPERATOR_FOR_DOC_ID", "Update operators cannot be used on _id field",
		"The command used the update operator: %s.\n_id field cannot be updated using update operators.\n\nResend the command without trying to update _id field.", op)
}

func errReplaceDifferentID(replaceID, matchedID any) *apiError {
	return reqErr("DOCUMENT", "DOCUMENT_REPLACE_DIFFERENT_DOCID", "Document the given _id already exists",
		"The replace document and document resolved using filter have different '_id's: %s (replace document) vs. %s (document that filter matches). \n\nResend the update command with a document that has same '_id' as document being replaced.",
		idText(replaceID), idText(matchedID))
}

func errRetryable(code, ks, coll string) *apiError {
	e := &apiError{code: code, family: famServer, scope: "DATABASE"}
	switch code {
	case "UNAVAILABLE_DATABASE":
		e.title = "The database is unavailable"
		e.message = fmt.Sprintf("The Data API submitted a query to the database, but the database refused to start processing as not enough nodes available.\n\nThis may be due to a temporary capacity issue with the database, or a wider outage. \n\nThe command used the keyspace and table or collection: %s.%s.\nThe number of nodes required was: 2.\nThe number of nodes available was: 1.\nThe database error: Not enough replicas available for query at consistency LOCAL_QUORUM (2 required but only 1 alive).\n\nIt is safe to retry this request.", ks, coll)
	default:
		e.title = "Timeout writing data to the database"
		e.message = fmt.Sprintf("The Data API generated a database query that timed out before completing the operation.\n\nThe query was most likely correct, but not enough nodes confirmed the operation had completed before the timeout.\n\nThis may be due to a temporary capacity issue with the database, or a wider outage.\n\nThe command used the keyspace and table or collection: %s.%s.\nThe write type was: CAS.\n\nIt is safe to retry this request.", ks, coll)
	}
	return e
}

// newUUID returns a random version-4 UUID, or a version-7 one (time-ordered) when v is 7.
func newUUID(v int) string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	if v == 7 {
		ms := uint64(nowMillis())
		for i := range 6 {
			b[i] = byte(ms >> (40 - 8*i))
		}
		b[6] = 0x70 | b[6]&0x0f
	} else {
		b[6] = 0x40 | b[6]&0x0f
	}
	b[8] = 0x80 | b[8]&0x3f
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func newObjectID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%x", b[:])
}
